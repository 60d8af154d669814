"""The ConSE image tower's maths on a stand-in backbone (no checkpoint needed): one view and
five, with and without the colour term."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.export.parity import require_parity
from models.photo.colour import ColourNames
from models.photo.export import export_image, image_forwards, session
from models.photo.tower import (
    LITE_MEAN,
    LITE_STD,
    PhotoImageTower,
    add_colour,
    conse_embed,
    mix_views,
    split_views,
)

CLASSES, DIM, FEATURES = 12, 8, 6


class FakeBackbone(nn.Module):
    """The two parts of EfficientNet the tower uses: extract_features and _fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, FEATURES, 3, padding=1)
        self._fc = nn.Linear(FEATURES, CLASSES)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


Parts = tuple[FakeBackbone, torch.Tensor, torch.Tensor]  # backbone, class table, pixels


@pytest.fixture
def parts() -> Parts:
    torch.manual_seed(0)
    table = F.normalize(torch.randn(CLASSES, DIM), dim=-1)
    return FakeBackbone().eval(), table, torch.randn(4, 3, 10, 10)


def _tower(parts: Parts, **kw: float) -> PhotoImageTower:
    backbone, table, _ = parts
    return PhotoImageTower(
        backbone,
        table,
        top_k=int(kw["top_k"]),
        temperature=kw["temperature"],
        label_k=int(kw["label_k"]),
    ).eval()


@torch.inference_mode()
def test_outputs_and_shapes(parts: Parts) -> None:
    image, visual, ids, scores = _tower(parts, top_k=3, temperature=2.0, label_k=5)(parts[2])
    assert image.shape == (4, DIM) and visual.shape == (4, FEATURES)
    assert ids.shape == scores.shape == (4, 5) and ids.dtype == torch.int64
    assert torch.allclose(image.norm(dim=-1), torch.ones(4))
    assert torch.allclose(visual.norm(dim=-1), torch.ones(4))
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # best first


@torch.inference_mode()
def test_labels_are_the_plain_softmax(parts: Parts) -> None:
    x = parts[2]
    tower = _tower(parts, top_k=2, temperature=5.0, label_k=4)
    _, logits = tower.features(x)
    probs = logits.softmax(dim=-1)
    _, _, ids, scores = tower(x)
    want_scores, want_ids = probs.topk(4, dim=-1)
    assert torch.equal(ids, want_ids)
    assert torch.allclose(scores, want_scores, atol=1e-6)


@torch.inference_mode()
def test_conse_is_the_renormalised_tempered_mix(parts: Parts) -> None:
    _, table, x = parts
    tower = _tower(parts, top_k=3, temperature=0.7, label_k=1)
    _, logits = tower.features(x)
    probs = (logits / 0.7).softmax(dim=-1)
    top_p, top_i = probs.topk(3, dim=-1)
    weights = top_p / top_p.sum(dim=-1, keepdim=True)
    want = F.normalize((weights.unsqueeze(-1) * table[top_i]).sum(dim=1), dim=-1)
    assert torch.allclose(tower(x)[0], want, atol=1e-6)
    assert torch.allclose(conse_embed(logits, table, top_k=3, temperature=0.7), want, atol=1e-6)


@torch.inference_mode()
def test_top_1_is_the_best_class_text(parts: Parts) -> None:
    _, table, x = parts
    tower = _tower(parts, top_k=1, temperature=1.0, label_k=1)
    image, _, ids, _ = tower(x)
    assert torch.allclose(image, table[ids[:, 0]], atol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        {"top_k": 0, "temperature": 1.0, "label_k": 1},
        {"top_k": CLASSES + 1, "temperature": 1.0, "label_k": 1},
        {"top_k": 2, "temperature": 0.0, "label_k": 1},
        {"top_k": 2, "temperature": 1.0, "label_k": 0},
    ],
)
def test_bad_settings_are_refused(parts: Parts, kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _tower(parts, **kw)


COLOURS = 11


def _colour(size: int) -> tuple[ColourNames, torch.Tensor]:
    """A colour head for pictures of ``size`` and a stand-in colour-word table."""
    return ColourNames(size, LITE_MEAN, LITE_STD), torch.randn(COLOURS, DIM) * 0.2


@torch.inference_mode()
def test_colour_term_is_added_to_the_conse_mix(parts: Parts) -> None:
    backbone, table, x = parts
    head, colours = _colour(10)
    plain = _tower(parts, top_k=3, temperature=2.0, label_k=2)
    coloured = PhotoImageTower(
        backbone,
        table,
        top_k=3,
        temperature=2.0,
        label_k=2,
        colour=head,
        colour_embeds=colours,
        colour_weight=0.3,
    ).eval()
    shares = head(x)
    want = F.normalize(plain(x)[0] + 0.3 * shares @ colours, dim=-1)
    got = coloured(x)
    assert torch.allclose(got[0], want, atol=1e-6)
    for a, b in zip(got[1:], plain(x)[1:], strict=True):  # visual and labels are untouched
        assert torch.equal(a, b)
    assert torch.allclose(add_colour(plain(x)[0], shares, colours, 0.3), want)


def test_colour_weight_needs_a_head(parts: Parts) -> None:
    backbone, table, _ = parts
    with pytest.raises(ValueError):
        PhotoImageTower(backbone, table, top_k=2, temperature=1.0, label_k=1, colour_weight=0.1)


def test_mix_views_adds_only_what_a_crop_is_sure_of() -> None:
    whole = torch.tensor([[0.7, 0.2, 0.1]])
    crops = torch.tensor([[[0.1, 0.1, 0.8]], [[0.4, 0.3, 0.3]]])  # [views, n, classes]
    mixed = mix_views(whole, crops, gate=0.5, weight=1.0)
    want = torch.tensor([[0.7, 0.2, 0.1 + 0.3]]) / 1.3
    assert torch.allclose(mixed, want)
    assert torch.allclose(mix_views(whole, crops, gate=0.9, weight=1.0), whole)


@torch.inference_mode()
def test_five_views_take_twice_the_size_and_keep_the_whole_picture(parts: Parts) -> None:
    backbone, table, _ = parts
    x = torch.randn(3, 3, 20, 20)
    five = PhotoImageTower(
        backbone, table, top_k=3, temperature=2.0, label_k=4, views=5, view_weight=0.0
    ).eval()
    one = _tower(parts, top_k=3, temperature=2.0, label_k=4)
    whole = F.avg_pool2d(x, 2)
    for a, b in zip(five(x), one(whole), strict=True):  # weight 0: the quadrants add nothing
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    whole_view, quadrants = split_views(x)
    assert torch.equal(whole_view, whole) and len(quadrants) == 4
    assert torch.equal(quadrants[1], x[:, :, :10, 10:])  # top right
    sure = PhotoImageTower(
        backbone, table, top_k=3, temperature=2.0, label_k=4, views=5, view_gate=0.0
    ).eval()
    _, mixed = sure.class_log_probs(x)
    assert torch.allclose(mixed.exp().sum(dim=-1), torch.ones(3), atol=1e-6)
    assert not torch.allclose(mixed, one.class_log_probs(whole)[1])


@pytest.mark.parametrize(("views", "gate"), [(2, 0.5), (5, 1.0)])
def test_bad_view_settings_are_refused(parts: Parts, views: int, gate: float) -> None:
    backbone, table, _ = parts
    with pytest.raises(ValueError):
        PhotoImageTower(
            backbone, table, top_k=2, temperature=1.0, label_k=1, views=views, view_gate=gate
        )


@pytest.mark.slow
def test_five_views_with_colour_export_with_parity(parts: Parts, tmp_path: Path) -> None:
    backbone, table, _ = parts
    head, colours = _colour(28)
    tower = PhotoImageTower(
        backbone,
        table,
        top_k=3,
        temperature=2.0,
        label_k=4,
        views=5,
        colour=head,
        colour_embeds=colours,
        colour_weight=0.3,
    ).eval()
    export_image(tower, 56, tmp_path / "image.onnx")
    reference, candidate = image_forwards(tower, session(tmp_path / "image.onnx"), 56)
    assert require_parity(reference, candidate, precision="fp32").passed
