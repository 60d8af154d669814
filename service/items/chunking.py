"""Long captions → sentence chunks that each fit the text tower, so that none of a caption is cut.

A text tower reads at most ``max_tokens`` tokens (special tokens included) and the tokenizer
drops the rest without a word: a single caption vector of a long text says nothing about its
end. Captions are therefore stored as a multivector, one row per chunk, and searched by MaxSim.

Chunks are runs of whole sentences, packed greedily while they fit; a sentence that alone is too
long is packed by words, and a word that alone is too long is cut where it must be. Every chunk
is a slice of the caption, so nothing is rewritten: joined with spaces, the chunks hold the
caption's words in order. Fitting is decided by a token count: the real tokenizer's
(``service.core.bundle.tokenize.TokenCounter``, exact) where the process has it, else
:func:`estimate_tokens`, a guess that the caller must check against what the encoder reports
(``service.items.points``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator

from service.core.errors import invalid

# Tokens the text tower would read for a text: special tokens included, nothing truncated.
TokenCount = Callable[[str], int]
# 10,000 characters (limits.max_caption_chars) of prose make 30-50 chunks of CLIP's 77 tokens;
# the bound is for pathological text (a token per character), not a limit that prose meets.
MAX_CHUNKS = 512
# The special tokens a text tower adds ([CLS] [SEP], <start> <end>): what an estimate reserves.
SPECIAL_TOKENS = 2

# A sentence ends after . ! ? or an ellipsis (and closing quotes or brackets) before a space,
# after a CJK full stop, exclamation or question mark (and closing brackets), or at a line break.
_SENTENCE_END = re.compile(
    r"[.!?\u2026]+[\"'\u201d\u2019\u00bb)\]]*(?=\s)"
    r"|[\u3002\uff01\uff1f]+[\u300d\u300f\u201d\u2019)]*"
    r"|\n"
)
_WORD = re.compile(r"\S+")
_PIECE = re.compile(r"[A-Za-z0-9]+|\S")
Span = tuple[int, int]


def estimate_tokens(text: str) -> int:
    """A guess at the tokens of ``text`` for an unknown WordPiece or BPE tokenizer: a token per
    three letters or digits of a word, one per other character, plus the special tokens. It
    errs high on plain prose; words a vocabulary lacks can still take more."""
    pieces = _PIECE.findall(text)
    return SPECIAL_TOKENS + sum(math.ceil(len(p) / 3) if p.isascii() else 1 for p in pieces)


def chunk_caption(
    text: str, count: TokenCount, max_tokens: int, *, max_chunks: int = MAX_CHUNKS
) -> list[str]:
    """``text`` as chunks of at most ``max_tokens`` tokens each (by ``count``), in order.

    Raises ClipsearchError(invalid_input) when the text needs more than ``max_chunks`` chunks,
    and when not even one character fits (a bundle whose special tokens fill ``max_tokens``).
    """
    text = text.strip()
    if not text:
        return []
    if count(text) <= max_tokens:
        return [text]
    chunks: list[str] = []
    for start, end in _pack(text, _sentences(text), count, max_tokens):
        chunks.append(text[start:end])
        if len(chunks) > max_chunks:
            raise invalid(
                f"the caption needs more than {max_chunks} chunks of {max_tokens} tokens",
                {"max_chunks": max_chunks, "max_tokens": max_tokens},
            )
    return chunks


def split_in_two(text: str) -> tuple[str, str]:
    """Halve a chunk at the sentence end, else the space, nearest its middle (else mid-word):
    for a chunk the encoder reports as too long after an estimate let it through."""
    middle = len(text) // 2
    for pattern in (_SENTENCE_END, re.compile(r"\s+")):
        cuts = [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]
        if cuts:
            cut = min(cuts, key=lambda c: abs(c - middle))
            left, right = text[:cut].strip(), text[cut:].strip()
            if left and right:
                return left, right
    cut = max(1, middle)
    return text[:cut], text[cut:]


def _sentences(text: str) -> list[Span]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    return [s for span in spans if (s := _strip(text, span))[0] < s[1]]


def _words(text: str, span: Span) -> list[Span]:
    base = span[0]
    return [(base + m.start(), base + m.end()) for m in _WORD.finditer(text[span[0] : span[1]])]


def _strip(text: str, span: Span) -> Span:
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _pack(text: str, spans: list[Span], count: TokenCount, limit: int) -> Iterator[Span]:
    """Greedy: extend the current chunk by the next span while the whole still fits; a span
    that does not fit alone is packed one level down (sentence → words → characters)."""
    current: Span | None = None
    for span in spans:
        if current is not None:
            if count(text[current[0] : span[1]]) <= limit:
                current = (current[0], span[1])
                continue
            yield current
            current = None
        if count(text[span[0] : span[1]]) <= limit:
            current = span
            continue
        words = _words(text, span)
        if len(words) > 1:
            yield from _pack(text, words, count, limit)
        else:
            yield from _cut_word(text, span, count, limit)
    if current is not None:
        yield current


def _cut_word(text: str, span: Span, count: TokenCount, limit: int) -> Iterator[Span]:
    """The longest prefixes that fit, by binary search on the length (token counts of a word's
    prefixes grow with the prefix, near enough; every cut is checked, so each piece fits)."""
    start, end = span
    while start < end:
        lo, hi = start + 1, end
        if count(text[start:lo]) > limit:
            raise invalid(f"the text tower's {limit} tokens do not hold even one character")
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[start:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        yield start, lo
        start = lo
