"""The WordNet 3.0 noun reader: the line format, and the broader-term walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.photo.wordnet import DEFAULT_DATA_NOUN, WordNet, parse, parse_line

# Real lines of data.noun (WordNet 3.0), cut to what the parser reads.
LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by  ",
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 "
    "| that which is perceived  ",
    "02121808 05 n 02 domestic_cat 0 house_cat 0 002 @ 02121620 n 0000 ~ 02123045 n 0000 "
    "| any domesticated member of the genus Felis  ",
    "02121620 05 n 02 cat 0 true_cat 0 001 @ 00001740 n 0000 | feline mammal  ",
    "02123045 05 n 02 tabby 1 tabby_cat 0 001 @ 02121808 n 0000 "
    "| a cat with a grey or tawny coat mottled with black  ",
    "09999999 05 n 01 Chelsea 0 002 @i 02123045 n 0000 + 00028167 v 0101 | an instance  ",
]


def test_header_lines_are_skipped() -> None:
    assert parse_line(LINES[0]) is None
    assert len(list(parse(LINES))) == 5


def test_line_fields() -> None:
    synset = parse_line(LINES[4])
    assert synset is not None
    assert synset.wnid == "n02123045"
    assert synset.lemmas == ("tabby", "tabby cat")  # underscores become spaces; lex_ids dropped
    assert synset.hypernyms == ("02121808",)
    assert synset.gloss.startswith("a cat with a grey")


def test_word_count_is_hex_and_only_noun_hypernyms_count() -> None:
    line = "00000001 05 n 0a " + " ".join(f"w{i} 0" for i in range(10)) + " 002 @ 00000002 n 0000"
    line += " @ 00000003 v 0000 | ten words"
    synset = parse_line(line)
    assert synset is not None and len(synset.lemmas) == 10
    assert synset.hypernyms == ("00000002",)


def test_ancestors_nearest_first_and_instance_hypernyms() -> None:
    wn = WordNet(parse(LINES))
    assert [s.lemmas[0] for s in wn.ancestors("n02123045")] == [
        "domestic cat",
        "cat",
        "entity",
    ]
    assert wn.ancestors("n09999999")[0].lemmas[0] == "tabby"  # via @i
    with pytest.raises(KeyError, match="not a WordNet"):
        wn.get("n00000042")


def test_missing_file_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        WordNet.load(tmp_path / "data.noun")


@pytest.mark.skipif(not DEFAULT_DATA_NOUN.is_file(), reason="Debian wordnet-base not installed")
def test_real_wordnet_tabby() -> None:
    wn = WordNet.load()
    assert len(wn.synsets) == 82115  # WordNet 3.0's noun synsets
    broader = [s.lemmas[0] for s in wn.ancestors("n02123045")]
    assert broader[:2] == ["domestic cat", "cat"]
    assert broader[-1] == "entity"
