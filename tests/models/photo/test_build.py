"""End to end: ``python -m models.photo`` builds a loadable, parity-checked bundle whose
classes are in the checkpoint's order (the cat photo comes out as a cat)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from models.photo.wordnet import DEFAULT_DATA_NOUN
from service.core.bundle.labels import load_labels
from service.core.bundle.manifest import load_bundle
from service.core.bundle.preprocess import decode_image, image_to_tensor
from service.core.bundle.tokenize import TextTokenizer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DEFAULT_DATA_NOUN.is_file(), reason="Debian wordnet-base not installed"),
]
CAT = Path(__file__).parent / "data" / "chelsea.jpg"
# ImageNet-1k indices of tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = {281, 282, 283, 284, 285}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("efficientnet_lite_pytorch")
    from models.photo.__main__ import main

    out = tmp_path_factory.mktemp("photo") / "photo"
    # The cheapest real build: lite0, one template, no broader terms (1,000 class phrases).
    args = ["--out", str(out), "--variant", "lite0", "--templates", "bare"]
    assert main([*args, "--hypernym-weight", "0", "--top-k", "5", "--version", "0.0.1"]) == 0
    return out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_manifest_loads_and_matches_the_graphs(bundle_dir: Path) -> None:
    m = load_bundle(bundle_dir).manifest
    assert (m.name, m.version, m.trained) == ("photo", "0.0.1", True)
    it = m.image_tower
    assert (it.image_size, it.output_dim, it.visual_dim, it.normalized) == (224, 384, 1280, True)
    assert it.labels is not None and it.labels.top_k == 5
    assert (m.spaces.image, m.spaces.caption, m.spaces.description, m.spaces.visual) == (
        384,
        384,
        384,
        1280,
    )
    assert m.description_embedder.source == "text_tower"
    assert m.card is not None and len(m.card.components) == 3
    assert "75.1" in m.card.components[0].notes
    image = onnx.load(str(bundle_dir / "image.onnx"))
    assert {o.domain: o.version for o in image.opset_import}[""] == 17
    outputs = {o.name: o.shape for o in _session(bundle_dir / "image.onnx").get_outputs()}
    assert outputs == {
        "image_embeds": ["batch", 384],
        "visual_embeds": ["batch", 1280],
        "label_ids": ["batch", 5],
        "label_scores": ["batch", 5],
    }
    build_md = (bundle_dir / "BUILD.md").read_text()
    assert "| image_fp32 (fp32) | 1, 8, 32 |" in build_md


def test_labels_json(bundle_dir: Path) -> None:
    labels = load_labels(bundle_dir / "labels.json")
    assert len(labels.classes) == 1000
    assert labels.classes[281].id == "n02123045" and labels.classes[281].name == "tabby cat"


def test_the_cat_photo_is_a_cat_and_matches_cat_queries(bundle_dir: Path) -> None:
    m = load_bundle(bundle_dir).manifest
    pixels = image_to_tensor(decode_image(CAT.read_bytes(), 10**8), m.image_tower)[None]
    embeds, _visual, ids, scores = _session(bundle_dir / "image.onnx").run(
        None, {"pixel_values": pixels}
    )
    assert int(ids[0, 0]) in CAT_CLASSES
    assert 0 < float(scores[0, 0]) <= 1 and np.all(np.diff(scores[0]) <= 0)
    tok = TextTokenizer(bundle_dir / "tokenizer.json", max_tokens=256, pad_id=0)
    enc = tok.encode(["a photo of a cat", "a photo of a car", "a bowl of soup"])
    text, sentence = _session(bundle_dir / "text.onnx").run(
        None, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
    )
    assert np.allclose(text, sentence)
    sims = text @ embeds[0]
    assert sims.argmax() == 0


def test_build_md_records_the_build(bundle_dir: Path) -> None:
    text = (bundle_dir / "BUILD.md").read_text()
    assert "python -m models.photo --out" in text
    assert "--top-k 5" in text
    assert "| text_fp32 (fp32) | 1, 8, 32 |" in text
    assert "| text_vs_uncompressed (int8) | 1, 8, 32 |" in text
    assert "- colour: basic colour terms (models/photo/colour.py) at weight 0.3" in text
    assert "- views: one (224px)" in text
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert "BUILD.md" not in manifest["files"]


def _plain_png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 240), rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_colour_queries_prefer_pictures_of_their_colour(bundle_dir: Path) -> None:
    m = load_bundle(bundle_dir).manifest
    assert "colour terms at weight 0.3" in m.summary
    pixels = np.stack(
        [
            image_to_tensor(decode_image(_plain_png(rgb), 10**8), m.image_tower)
            for rgb in ((210, 30, 30), (30, 70, 200))
        ]
    )
    embeds = _session(bundle_dir / "image.onnx").run(["image_embeds"], {"pixel_values": pixels})[0]
    tok = TextTokenizer(bundle_dir / "tokenizer.json", max_tokens=256, pad_id=0)
    enc = tok.encode(["something red", "something blue"])
    text = _session(bundle_dir / "text.onnx").run(
        ["text_embeds"], {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
    )[0]
    sims = text @ embeds.T  # [query, picture]
    # The classes each plain picture is taken for move both queries alike; the colour term
    # moves each query towards its own colour.
    assert sims[0, 0] - sims[0, 1] > sims[1, 0] - sims[1, 1]
