"""Supervision for the conjunction channel: which colour and shape each token and image cell shows.

The default variant binds colours to shapes through an explicit channel (see
:mod:`models.train.towers`): both towers predict, per text bigram or per image cell, a colour
distribution, a shape distribution and a gate, and sum the gated outer products. These are the
targets that teach the predictions, computed from the scene generator's ground truth:

- :func:`token_labels`: for every "<colour> <shape>" word pair in a text, the colour on the last
  token of the colour word and the shape on the first token of the shape word ("cyan hexagon" is
  ``cy ##an he ##xa ##gon``: the pair is ``##an``/``he``), aligned with the serving tokenization;
- :func:`cell_labels`: for every cell of the image tower's conjunction map, the colour and shape
  of the object drawn on top there, 0 for clear background, ignored near object borders.

Colour and shape words are canonical in every text (``models.data.vocab``), so the word pair is
an exact, unambiguous label.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np
from tokenizers import Tokenizer

from models.data.scene import Scene
from models.data.vocab import COLOURS, MAX_OBJECTS, SHAPE_PLURALS, SHAPES
from models.train.minilm import MAX_TOKENS, tokenizer_path

COLOUR_INDEX: dict[str, int] = {c: i for i, c in enumerate(COLOURS)}
SHAPE_INDEX: dict[str, int] = {s: i for i, s in enumerate(SHAPES)}
_SHAPE_WORDS: dict[str, int] = {
    **SHAPE_INDEX,
    **{plural: SHAPE_INDEX[s] for s, plural in SHAPE_PLURALS.items()},
}
NO_LABEL = -1
# Geometry rows: x, y, radius, colour index, shape index; NO_LABEL rows pad to MAX_OBJECTS.
GEOMETRY_FIELDS = 5
_INSIDE = 0.9  # a cell centre within 0.9 radius of an object's centre shows that object
_NEAR = 1.4  # ... and within 1.4 radius (+ half a cell) is a border: neither object nor clear


@lru_cache(maxsize=1)
def _tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(tokenizer_path()))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)  # as TextTokenizer: ids and labels align
    return tok


def token_labels(texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text: ``(colour, shape)`` int8 arrays over its tokens ([CLS] .. [SEP]), NO_LABEL
    where a token is not part of a "<colour> <shape>" word pair."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for enc, text in zip(_tokenizer().encode_batch(list(texts)), texts, strict=True):
        colour = np.full(len(enc.ids), NO_LABEL, np.int8)
        shape = np.full(len(enc.ids), NO_LABEL, np.int8)
        # Words in order, each as (first token, last token, lower-cased text).
        spans: dict[int, list[int]] = {}
        for t, w in enumerate(enc.word_ids):
            if w is not None:
                spans.setdefault(w, []).append(t)
        words = [
            (ts[0], ts[-1], text[enc.offsets[ts[0]][0] : enc.offsets[ts[-1]][1]].lower())
            for _, ts in sorted(spans.items())
        ]
        for (_, last, first_word), (start, _, second_word) in pairwise(words):
            c, s = COLOUR_INDEX.get(first_word), _SHAPE_WORDS.get(second_word)
            if start == last + 1 and c is not None and s is not None:
                colour[last], shape[start] = c, s
        out.append((colour, shape))
    return out


def scene_geometry(scenes: Sequence[Scene]) -> np.ndarray:
    """float32 [n, MAX_OBJECTS, 5]: x, y, radius, colour, shape per object (rows of -1 pad)."""
    geo = np.full((len(scenes), MAX_OBJECTS, GEOMETRY_FIELDS), NO_LABEL, np.float32)
    for i, scene in enumerate(scenes):
        for j, o in enumerate(scene.objects):
            geo[i, j] = (o.x, o.y, o.radius, COLOUR_INDEX[o.colour], SHAPE_INDEX[o.shape])
    return geo


def cell_labels(
    geometry: np.ndarray, dx: np.ndarray, dy: np.ndarray, grid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets for a ``grid`` x ``grid`` map of images whose content moved by (dx, dy) (fractions
    of the side): colour and shape int64 [b, g, g] (NO_LABEL off objects), gate float32
    [b, g, g] (1 object, 0 clear background, -1 border: not trained)."""
    b = geometry.shape[0]
    centres = (np.arange(grid) + 0.5) / grid
    cx, cy = np.meshgrid(centres, centres)  # [row, column]: x varies along columns
    colour = np.full((b, grid, grid), NO_LABEL, np.int64)
    shape = np.full((b, grid, grid), NO_LABEL, np.int64)
    gate = np.zeros((b, grid, grid), np.float32)
    for i in range(b):
        near = np.zeros((grid, grid), bool)
        for x, y, r, c, s in geometry[i]:
            if c < 0:
                continue
            dist = np.hypot(cx - (x + dx[i]), cy - (y + dy[i]))
            inside = dist < _INSIDE * r
            # Objects are drawn in order: a later one covers an earlier one.
            colour[i][inside], shape[i][inside], gate[i][inside] = int(c), int(s), 1.0
            near |= dist < _NEAR * r + 0.5 / grid
        gate[i][near & (gate[i] == 0)] = -1.0
    return colour, shape, gate
