"""The tiny bundle is real: it builds fast, deterministically, and passes the ONNX checker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from models.tiny import FILES, build_tiny_bundle, main
from service.core.bundle.manifest import MANIFEST_NAME, load_bundle


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (*FILES, MANIFEST_NAME)}


def test_builds_and_loads(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    m = bundle.manifest
    assert m.ref == "tiny-test@0.1.0"
    assert m.trained is False
    assert "not" in m.summary and "semantic" in m.summary
    assert (m.spaces.image, m.spaces.caption, m.spaces.description) == (64, 64, 128)
    assert m.image_tower.image_size == 32
    assert m.text_tower.sentence_output_name == "sentence_embeds"
    assert m.description_embedder.source == "text_tower"
    assert set(m.files) == set(FILES)


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    first = _bytes(build_tiny_bundle(tmp_path / "a", seed=0))
    again = _bytes(build_tiny_bundle(tmp_path / "b", seed=0))
    other = _bytes(build_tiny_bundle(tmp_path / "c", seed=1))
    assert first == again
    assert other["text.onnx"] != first["text.onnx"]
    assert other["image.onnx"] != first["image.onnx"]
    assert other["tokenizer.json"] == first["tokenizer.json"]  # the vocabulary has no seed


@pytest.mark.parametrize("name", ["image.onnx", "text.onnx"])
def test_onnx_checker_passes(tiny_bundle_dir: Path, name: str) -> None:
    model = onnx.load(str(tiny_bundle_dir / name))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == 17


def test_graph_io_has_dynamic_axes(tiny_bundle_dir: Path) -> None:
    text = ort.InferenceSession(str(tiny_bundle_dir / "text.onnx"))
    assert [(i.name, i.shape, i.type) for i in text.get_inputs()] == [
        ("input_ids", ["batch", "seq"], "tensor(int64)"),
        ("attention_mask", ["batch", "seq"], "tensor(int64)"),
    ]
    assert {o.name: o.shape for o in text.get_outputs()} == {
        "text_embeds": ["batch", 64],
        "sentence_embeds": ["batch", 128],
    }
    image = ort.InferenceSession(str(tiny_bundle_dir / "image.onnx"))
    assert image.get_inputs()[0].shape == ["batch", 3, 32, 32]
    assert image.get_outputs()[0].shape == ["batch", 64]


def test_all_zero_mask_gives_zero_not_nan(tiny_bundle_dir: Path) -> None:
    text = ort.InferenceSession(str(tiny_bundle_dir / "text.onnx"))
    ids = np.array([[2, 7, 3]], dtype=np.int64)
    joint, sentence = text.run(
        ["text_embeds", "sentence_embeds"],
        {"input_ids": ids, "attention_mask": np.zeros_like(ids)},
    )
    assert np.all(np.isfinite(joint)) and np.all(sentence == 0)


def test_tokenizer_is_bert_style_without_truncation_or_padding(tiny_bundle_dir: Path) -> None:
    raw = json.loads((tiny_bundle_dir / "tokenizer.json").read_text())
    assert raw["truncation"] is None and raw["padding"] is None
    tok = Tokenizer.from_file(str(tiny_bundle_dir / "tokenizer.json"))
    assert tok.id_to_token(0) == "[PAD]"
    assert tok.encode("A Red CIRCLE").tokens == ["[CLS]", "a", "red", "circle", "[SEP]"]
    # A word outside the corpus splits into pieces instead of collapsing to [UNK].
    pieces = tok.encode("crimson").tokens[1:-1]
    assert len(pieces) > 1 and "[UNK]" not in pieces


def test_cli_builds_a_bundle(tmp_path: Path) -> None:
    assert main([str(tmp_path / "cli"), "--seed", "3"]) == 0
    assert load_bundle(tmp_path / "cli").manifest.name == "tiny-test"
