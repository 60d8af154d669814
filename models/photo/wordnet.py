"""A reader for WordNet 3.0's noun database (``data.noun``, format: ``man 5 wndb``).

ImageNet's class ids are WordNet 3.0 noun offsets (``n`` + 8 digits), so the synonyms and the
broader terms (hypernyms) of a class come straight from Debian's ``wordnet-base`` package. Only
the fields the photo bundle needs are kept: the lemmas and the hypernym pointers (``@`` for a
kind of, ``@i`` for an instance of). No nltk: the format is a line per synset and this is the
whole parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_NOUN = Path("/usr/share/wordnet/data.noun")
HYPERNYM_POINTERS = frozenset({"@", "@i"})


@dataclass(frozen=True)
class Synset:
    offset: str  # 8 digits, as in the file
    lemmas: tuple[str, ...]  # underscores turned into spaces, in WordNet's order
    hypernyms: tuple[str, ...]  # offsets of the synsets this one is a kind or an instance of
    gloss: str

    @property
    def wnid(self) -> str:
        return "n" + self.offset


def parse_line(line: str) -> Synset | None:
    """One ``data.noun`` line; ``None`` for the licence header (lines starting with spaces)."""
    if not line or line[0] == " ":
        return None
    data, _, gloss = line.partition(" | ")
    fields = data.split()
    offset, w_cnt = fields[0], int(fields[3], 16)  # the word count is two hex digits
    words = fields[4 : 4 + 2 * w_cnt : 2]  # each word is followed by its lex_id
    pos = 4 + 2 * w_cnt
    p_cnt = int(fields[pos])
    hypernyms = []
    for i in range(p_cnt):
        symbol, target, target_pos = fields[pos + 1 + 4 * i : pos + 4 + 4 * i]
        if symbol in HYPERNYM_POINTERS and target_pos == "n":
            hypernyms.append(target)
    lemmas = tuple(w.replace("_", " ") for w in words)
    return Synset(offset, lemmas, tuple(hypernyms), gloss.strip())


def parse(lines: Iterable[str]) -> Iterator[Synset]:
    for line in lines:
        synset = parse_line(line.rstrip("\n"))
        if synset is not None:
            yield synset


class WordNet:
    """The noun synsets by offset, with the broader-term walk the labels need."""

    def __init__(self, synsets: Iterable[Synset]) -> None:
        self.synsets = {s.offset: s for s in synsets}

    @classmethod
    def load(cls, path: Path = DEFAULT_DATA_NOUN) -> WordNet:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{path} is missing: WordNet 3.0 comes from Debian (apt-get install wordnet-base)"
            )
        with Path(path).open(encoding="utf-8") as fh:
            return cls(parse(fh))

    def get(self, wnid: str) -> Synset:
        offset = wnid[1:] if wnid.startswith("n") else wnid
        try:
            return self.synsets[offset]
        except KeyError:
            raise KeyError(f"{wnid} is not a WordNet 3.0 noun synset") from None

    def ancestors(self, wnid: str) -> list[Synset]:
        """Every broader synset, breadth first (nearest first), each once.

        Breadth first keeps "most specific first" also where a synset has two parents (a
        ``car`` is a ``motor vehicle`` and, through another path, a ``wheeled vehicle``).
        """
        seen: set[str] = set()
        order: list[Synset] = []
        frontier = list(self.get(wnid).hypernyms)
        while frontier:
            nxt: list[str] = []
            for offset in frontier:
                if offset in seen:
                    continue
                seen.add(offset)
                synset = self.synsets[offset]
                order.append(synset)
                nxt.extend(synset.hypernyms)
            frontier = nxt
        return order
