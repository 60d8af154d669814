"""The HF ``tokenizers`` rebuild of OpenCLIP's BPE gives ``open_clip.tokenize``'s ids.

Runs in the export venv (``.venv-export``), where open_clip is installed; the comparison goes
through ``service.core.bundle.tokenize.TextTokenizer``, the serving path, including its truncation.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip(
    "open_clip", reason="needs open_clip: run in .venv-export (scripts/export-venv.sh)"
)

from models.export.clip_tokenizer import (  # noqa: E402
    EOT_ID,
    PAD_ID,
    SOT_ID,
    VOCAB_SIZE,
    build_clip_tokenizer,
    write_clip_tokenizer,
)
from service.core.bundle.tokenize import TextTokenizer  # noqa: E402


def _wide(text: str) -> str:
    """The full-width forms of ASCII ``text`` (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


WORDS = [
    'a', 'photo', 'of', 'the', 'cat', 'dog', 'running', 'beach', 'sunset', 'New', 'York',
    'City', 'mountains', 'café', 'naïve', 'Zürich', 'résumé', 'façade', 'über', 'straße',
    'Ελλάδα', 'ΟΔΟΣ', 'Москва', 'русский', '東京', '日本語', '北京', '한국어',
    'العربية', 'हिन्दी', 'ไทย',
    "don't", "it's", "I'M", "they're", "we've", "you'll", "she'd", "O'Neil", "rock'n'roll",
    'e-mail', 'state-of-the-art', '3D', '4K', '1080p', '2024', '3.14', '1,000,000', '#hashtag',
    '@user', 'http://example.com/a?b=c', 'user@example.com', 'C++', 'node.js', '$100', '50%',
    '½', '²', '™', '©', '®',
]  # fmt: skip
DECOR = (
    "!", "?", "...", ",", ";", ":", "(", ")", "[x]", "{y}", '"', "'", "-", "\u2014", "\u2013", "/",
    "&amp;", "&lt;b&gt;", "&quot;q&quot;", "&#39;", "&amp;amp;", "AT&T", "&AMP;", "&lt", "&amp",
    "\u201ccurly\u201d", "\u2018single\u2019", "ﬁne", "ﬂow",
    _wide("ABC"), _wide("test"), _wide("123"),
    "\u3000", "ｶﾞｷﾞ", "👍", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "🇫🇷", "❤️", "\u200b", "\ufeff",
    "\t", "\n", "\r\n", "   ", "\x0c", "\x1c", "\x00", "\x7f", "e\u0301", "ǅ", "İ",
    "<|endoftext|>", "</w>", "<b>", "a<b",
)  # fmt: skip
# Known differences, kept out of the random mix (see models/export/clip_tokenizer.py): a special
# token glued to preceding symbols ("!<end_of_text>": OpenCLIP's regex swallows its "<"), and
# "&NBSP;" in a text that contains "<" (ftfy then skips its own, case-blind unescaping).
HANDPICKED = (
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "  leading and trailing spaces  ",
    "multiple     spaces\t\tand\nnewlines\r\n",
    "Fish &amp; Chips &lt;3",
    "&amp;lt;b&amp;gt; double escaped",
    "\u201cQuoted\u201d and \u2018single\u2019",
    "ΟΔΟΣ ΑΣ ΣΑΣ Σ",
    "emoji 👍🏽 family 👨‍👩‍👧 flag 🇯🇵",
    _wide("fullwidth") + "\u3000" + _wide("text(123)"),
    "ﬁnancial ﬂow",
    "don't won't can't shouldn't've",
    "1234567890",
    "x",
    "...",
    "Ünïcödé Ñandú",
    "non&nbsp;breaking&#160;space",
    "special <end_of_text> tokens <START_OF_TEXT> inside",
)


def varied_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = list(HANDPICKED)
    while len(texts) < n:
        pieces = [
            rng.choice(WORDS) if rng.random() < 0.7 else rng.choice(DECOR)
            for _ in range(rng.randint(1, 24))
        ]
        joins = [rng.choice((" ", " ", " ", "", "  ", "\t")) for _ in pieces]
        text = "".join(j + p for j, p in zip(joins, pieces, strict=True))
        texts.append(text.upper() if rng.random() < 0.15 else text)
    return texts


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _serving_ids(path: Path, texts: list[str], context: int) -> np.ndarray:
    ids = TextTokenizer(path, max_tokens=context, pad_id=PAD_ID).encode(texts).input_ids
    padded = np.full((len(texts), context), PAD_ID, dtype=np.int64)
    padded[:, : ids.shape[1]] = ids
    return padded


def _assert_same(reference: np.ndarray, ours: np.ndarray, texts: list[str]) -> None:
    bad = [i for i in range(len(texts)) if not np.array_equal(reference[i], ours[i])]
    detail = [(texts[i], reference[i][:12].tolist(), ours[i][:12].tolist()) for i in bad[:3]]
    assert not bad, f"{len(bad)} of {len(texts)} texts differ, e.g. {detail}"


def test_vocabulary_layout_matches_open_clip() -> None:
    tok = build_clip_tokenizer()
    reference = open_clip.SimpleTokenizer()
    assert tok.get_vocab_size() == VOCAB_SIZE == len(reference.encoder)
    assert (reference.sot_token_id, reference.eot_token_id) == (SOT_ID, EOT_ID)
    vocab = tok.get_vocab()
    sample = random.Random(1).sample(sorted(reference.encoder), 2000)
    assert all(vocab[t] == reference.encoder[t] for t in sample)


def test_ids_match_open_clip_on_varied_text(tokenizer_file: Path) -> None:
    texts = varied_texts(400)
    reference = open_clip.tokenize(texts, context_length=77).numpy()
    _assert_same(reference, _serving_ids(tokenizer_file, texts, 77), texts)


@pytest.mark.parametrize("context", [77, 248])
def test_truncation_keeps_end_of_text(tokenizer_file: Path, context: int) -> None:
    long_texts = [
        " ".join(varied_texts(60, seed=7)),  # far longer than either context
        "word " * (context - 2),  # exactly fills the context with SOT and EOT
        "word " * (context - 1),  # one token too many
        "🙂" * context,  # multi-token characters
    ]
    reference = open_clip.tokenize(long_texts, context_length=context).numpy()
    ours = _serving_ids(tokenizer_file, long_texts, context)
    _assert_same(reference, ours, long_texts)
    assert (ours[:, 0] == SOT_ID).all()
    assert (ours[[0, 2, 3], -1] == EOT_ID).all()


def test_decode_matches_open_clip() -> None:
    tok, reference = build_clip_tokenizer(), open_clip.SimpleTokenizer()
    text = "a photo of 2 cats, sleeping on a sofa!"
    ids = tok.encode(text).ids
    assert (
        tok.decode(ids)
        == reference.decode(ids[1:-1]).strip()
        == "a photo of 2 cats , sleeping on a sofa !"
    )
