"""Sentence chunking of long captions, counted with real tokenizers: no chunk is over the limit
when tokenized, and the chunks hold every word of the caption, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.bundle.tokenize import TokenCounter
from service.core.errors import ClipsearchError, ErrorType
from service.items.chunking import (
    MAX_CHUNKS,
    chunk_caption,
    estimate_tokens,
    split_in_two,
)

ZOO_TOKENIZER = Path(__file__).resolve().parents[3] / "models" / "zoo" / "scenes" / "tokenizer.json"

PROSE = (
    "A red circle sits on the left of the picture. Next to it, a small blue square! "
    'Is there a green triangle? "Yes," she said… it is near the top.\n\n'
    "The second paragraph describes the background: a dark grey field with a few white dots, "
    "and a long yellow line across the bottom edge of the image.\n"
    "日本語の説明文です。もう一つの文\uff01最後の文\uff1f "
    "Photosynthesis antidisestablishmentarianism. "
    + "x" * 300
    + " The last sentence mentions a purple star in the corner."
)


@pytest.fixture(
    scope="module",
    params=[pytest.param("tiny", id="tiny-wordpiece"), pytest.param("zoo", id="zoo-minilm")],
)
def counter(request: pytest.FixtureRequest, tiny_bundle_dir: Path) -> TokenCounter:
    path = tiny_bundle_dir / "tokenizer.json" if request.param == "tiny" else ZOO_TOKENIZER
    return TokenCounter(path)


def words(chunks: list[str]) -> list[str]:
    return " ".join(chunks).split()


@pytest.mark.parametrize("limit", [8, 16, 32, 77])
@pytest.mark.parametrize("text", [PROSE, PROSE * 6, "word " * 400, "y" * 2000])
def test_no_chunk_is_over_the_limit_and_every_character_stays(
    counter: TokenCounter, text: str, limit: int
):
    chunks = chunk_caption(text, counter, limit)
    assert chunks
    assert all(counter(chunk) <= limit for chunk in chunks)
    assert all(chunk == chunk.strip() and chunk for chunk in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())  # in order, nothing lost


def test_words_are_kept_whole_where_they_fit(counter: TokenCounter):
    text = " ".join(w for w in PROSE.replace("x" * 300, "").split() if w.isascii())
    chunks = chunk_caption(text, counter, 32)
    assert len(chunks) > 3
    assert words(chunks) == text.split()  # (CJK text is cut at its sentence ends: no spaces)


def test_sentences_are_packed_together_and_not_cut(counter: TokenCounter):
    sentences = [f"The {c} circle is on the {p}." for c in ("red", "blue") for p in ("left", "top")]
    text = " ".join(sentences)
    limit = max(counter(" ".join(sentences[:2])), counter(" ".join(sentences[2:])))
    assert counter(text) > limit
    assert chunk_caption(text, counter, limit) == [" ".join(sentences[:2]), " ".join(sentences[2:])]


def test_a_text_that_fits_is_one_chunk_as_it_is(counter: TokenCounter):
    assert chunk_caption("  a red circle.  ", counter, 77) == ["a red circle."]
    assert chunk_caption("   \n ", counter, 77) == []


def test_an_over_long_word_is_cut_into_pieces_that_fit(counter: TokenCounter):
    chunks = chunk_caption("z" * 500, counter, 10)
    assert "".join(chunks) == "z" * 500
    assert all(counter(c) <= 10 for c in chunks)
    assert all(counter(c) >= 8 for c in chunks[:-1])  # cut at the longest prefix, not anywhere


def test_too_many_chunks_is_an_input_error(counter: TokenCounter):
    with pytest.raises(ClipsearchError) as err:
        chunk_caption("word. " * 400, counter, 4, max_chunks=50)
    assert err.value.type is ErrorType.invalid_input
    assert "more than 50 chunks" in err.value.message


def test_a_tower_that_holds_no_character_is_refused(counter: TokenCounter):
    with pytest.raises(ClipsearchError) as err:
        chunk_caption("abc def", counter, 2)  # the two special tokens fill it
    assert err.value.type is ErrorType.invalid_input


def test_a_documented_limit_caption_stays_well_under_the_chunk_bound(counter: TokenCounter):
    text = (PROSE * 20)[:10_000]
    assert len(chunk_caption(text, counter, 64)) < MAX_CHUNKS // 2


def test_the_estimate_counts_the_special_tokens_and_errs_high_on_prose():
    zoo = TokenCounter(ZOO_TOKENIZER)
    assert estimate_tokens("") == 2
    for sentence in PROSE.replace("x" * 300, "").split(". "):
        assert estimate_tokens(sentence) >= zoo(sentence)


def test_split_in_two_prefers_sentences_then_spaces():
    assert split_in_two("One two. Three four five. Six.") == ("One two.", "Three four five. Six.")
    assert split_in_two("alpha beta gamma delta") == ("alpha beta", "gamma delta")
    assert split_in_two("abcdef") == ("abc", "def")
