"""Crops, mirror images and the rules that combine views (models/photo/tower.py), on a stand-in
backbone: the maths, the refusals, and ONNX parity of the six-view + flip graph."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.export.parity import require_parity
from models.photo.export import export_image, image_forwards, session
from models.photo.tower import RULES, PhotoImageTower, combine, crop_views
from tests.models.photo.test_tower import CLASSES, FakeBackbone, _colour


@pytest.fixture
def table() -> torch.Tensor:
    torch.manual_seed(0)
    return F.normalize(torch.randn(CLASSES, 8), dim=-1)


def test_crop_views_are_four_overlapping_corners_and_the_centre() -> None:
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    crops = crop_views(x, 4)
    assert [c.shape[-1] for c in crops] == [4] * 5
    assert torch.equal(crops[0], x[:, :, :4, :4])  # top left
    assert torch.equal(crops[1], x[:, :, :4, 2:])  # top right
    assert torch.equal(crops[2], x[:, :, 2:, :4])  # bottom left
    assert torch.equal(crops[3], x[:, :, 2:, 2:])  # bottom right
    assert torch.equal(crops[4], x[:, :, 1:5, 1:5])  # centre
    with pytest.raises(ValueError):
        crop_views(x, 2)  # less than half the side
    with pytest.raises(ValueError):
        crop_views(x, 7)


def test_combine_rules() -> None:
    whole = torch.tensor([[0.6, 0.3, 0.1]])
    crops = torch.tensor([[[0.2, 0.2, 0.6], [0.5, 0.4, 0.1]]])  # [n, views, classes]

    def unit(t: torch.Tensor) -> torch.Tensor:
        return t / t.sum(dim=-1, keepdim=True)

    assert torch.allclose(combine(whole, None, "whole"), whole)
    assert torch.allclose(combine(whole, crops, "max"), unit(torch.tensor([[0.6, 0.4, 0.6]])))
    noisy = 1 - torch.tensor([[0.4 * 0.8 * 0.5, 0.7 * 0.8 * 0.6, 0.9 * 0.4 * 0.9]])
    assert torch.allclose(combine(whole, crops, "noisy_or"), unit(noisy))
    whole_max = (whole + torch.tensor([[0.5, 0.4, 0.6]])) / 2
    assert torch.allclose(combine(whole, crops, "whole_max"), unit(whole_max))
    assert torch.allclose(combine(whole, crops, "mean"), unit(torch.tensor([[1.3, 0.9, 0.8]])))
    # gated: only the crop sure of a class (0.6 > 0.5) adds it
    assert torch.allclose(combine(whole, crops, "gated"), unit(torch.tensor([[0.6, 0.3, 0.2]])))
    for rule in RULES:
        out = combine(whole, crops, rule)
        assert torch.allclose(out.sum(dim=-1), torch.ones(1))
    with pytest.raises(ValueError):
        combine(whole, crops, "median")
    with pytest.raises(ValueError):
        combine(whole, None, "max")


@torch.inference_mode()
def test_flip_averages_the_mirror_image(table: torch.Tensor) -> None:
    backbone = FakeBackbone().eval()
    x = torch.randn(3, 3, 10, 10)
    flip = PhotoImageTower(backbone, table, top_k=3, temperature=2.0, label_k=4, flip=True)
    one = PhotoImageTower(backbone, table, top_k=3, temperature=2.0, label_k=4)
    pooled, log_probs = flip.class_log_probs(x)
    want = (one.class_log_probs(x)[1].exp() + one.class_log_probs(x.flip(-1))[1].exp()) / 2
    assert torch.allclose(log_probs.exp(), want, atol=1e-6)
    assert torch.allclose(pooled, one.class_log_probs(x)[0])  # visual: the picture as given
    symmetric = torch.cat([x[..., :5], x[..., :5].flip(-1)], dim=-1)
    for a, b in zip(flip(symmetric), one(symmetric), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


@torch.inference_mode()
def test_six_views_see_the_whole_input_and_its_crops(table: torch.Tensor) -> None:
    backbone = FakeBackbone().eval()
    x = torch.randn(2, 3, 15, 15)
    six = PhotoImageTower(
        backbone, table, top_k=3, temperature=2.0, label_k=4, views=6, crop_size=10, rule="max"
    )
    one = PhotoImageTower(backbone, table, top_k=3, temperature=2.0, label_k=4)
    pooled, log_probs = six.class_log_probs(x)
    whole_pooled, whole = one.class_log_probs(x)
    crops = torch.stack([one.class_log_probs(c)[1].exp() for c in crop_views(x, 10)], dim=1)
    assert torch.allclose(log_probs.exp(), combine(whole.exp(), crops, "max"), atol=1e-6)
    assert torch.allclose(pooled, whole_pooled)


@pytest.mark.parametrize(
    "kw",
    [{"views": 6, "crop_size": 0, "rule": "max"}, {"views": 6, "crop_size": 10}, {"rule": "x"}],
)
def test_bad_crop_settings_are_refused(table: torch.Tensor, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PhotoImageTower(
            FakeBackbone(),
            table,
            top_k=2,
            temperature=1.0,
            label_k=1,
            **kw,  # type: ignore[arg-type]
        )


@pytest.mark.slow
def test_six_views_flip_and_colour_export_with_parity(table: torch.Tensor, tmp_path: Path) -> None:
    head, colours = _colour(42)
    tower = PhotoImageTower(
        FakeBackbone().eval(),
        table,
        top_k=3,
        temperature=2.0,
        label_k=4,
        views=6,
        crop_size=28,
        rule="mean",
        flip=True,
        colour=head,
        colour_embeds=colours,
        colour_weight=0.3,
    ).eval()
    export_image(tower, 42, tmp_path / "image.onnx")
    reference, candidate = image_forwards(tower, session(tmp_path / "image.onnx"), 42)
    assert require_parity(reference, candidate, precision="fp32").passed


def test_build_md_quotes_the_crops_table(tmp_path: Path) -> None:
    from models.photo.report import CROPS_MD, CROPS_TABLE, _crops_section

    crops = tmp_path / "CROPS.md"
    crops.write_text(f"# x\n\n{CROPS_TABLE}\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## next\n")
    section = _crops_section(crops)
    assert section[0].startswith("## Crops") and "| 1 | 2 |" in section
    assert "## next" not in section
    assert _crops_section(tmp_path / "missing.md") == []
    assert CROPS_TABLE in CROPS_MD.read_text(encoding="utf-8")  # the shipped study has its table


def test_dev_variants_turn_cached_logits_into_the_graphs_distribution() -> None:
    import numpy as np

    from models.photo.dev.crops_report import VARIANTS, Variant

    rng = np.random.default_rng(0)
    feats = {k: rng.normal(size=(3, CLASSES)).astype(np.float32) for k in ("w224", "f224", "w336")}
    feats["c336"] = rng.normal(size=(3, 5, CLASSES)).astype(np.float32)
    flip = Variant("flip", 224, "2", ("w224", "f224"))
    soft = {k: torch.from_numpy(v).softmax(-1) for k, v in feats.items()}
    assert torch.allclose(flip.probs(feats), (soft["w224"] + soft["f224"]) / 2, atol=1e-6)
    crops = Variant("crops", 336, "6", ("w336",), "c336", "max")
    assert torch.allclose(crops.probs(feats), combine(soft["w336"], soft["c336"], "max"))
    centre = Variant("centre", 0, "2", ("w224",), "c336", "centre")
    want = (soft["w224"] + soft["c336"][:, 4]) / 2
    assert torch.allclose(centre.probs(feats), want / want.sum(-1, keepdim=True), atol=1e-6)
    assert len({v.label for v in VARIANTS}) == len(VARIANTS)
