"""OpenCLIP's ``SimpleTokenizer`` rebuilt as a Hugging Face ``tokenizers`` file (tokenizer.json).

Serving tokenizes with ``tokenizers`` only (no ftfy, no torch), so a CLIP bundle carries this
file. The ids equal ``open_clip.tokenize`` for ordinary text:

* **BPE**: the 49,152 - 256 - 2 merges of ``bpe_simple_vocab_16e6.txt.gz`` (shipped inside the
  open_clip package) over GPT-2's byte-to-unicode alphabet; the last symbol of each word carries
  the ``</w>`` suffix. Vocabulary order exactly as OpenCLIP builds it: 256 byte symbols, the same
  with ``</w>``, one entry per merge, then ``<start_of_text>`` (49406) and ``<end_of_text>``
  (49407). Sequences are ``<start_of_text> ... <end_of_text>``; padding is id 0, as in OpenCLIP.
* **Pre-tokenizer**: OpenCLIP's regex (the special tokens, English contractions, runs of
  letters, single digits, runs of other non-space symbols), then the byte-level mapping.
* **Pre-clean** (the normalizer): OpenCLIP runs ``ftfy.fix_text``, ``html.unescape`` twice,
  collapses whitespace and lower-cases. The normalizer mirrors that for everything but mojibake:
  ftfy's removal of control characters, Latin ligatures (``U+FB01`` → ``fi``), half- and
  full-width forms (``U+FF21`` → ``A``, U+3000 → space), curly quotes → straight ones, NFC; then
  the common HTML entities (``&amp; &lt; &gt; &quot; &apos; &#39; &#x27; &nbsp; &#160;``, the
  upper-case and semicolon-less forms HTML5 defines for some, nested up to twice like
  OpenCLIP's double unescape); then Python's ``str.split()`` whitespace → one
  space, strip, and lower-case (with Python's final-sigma rule).

Out of scope at serving time, so ids may differ from OpenCLIP's for: mojibake repair (ftfy's
``fix_encoding``, e.g. ``cafÃ©``), other named or numeric HTML entities, entities nested three or
more deep, and ANSI terminal escapes. Truncation is set by the serving side
(``service.core.bundle.tokenize``): ``tokenizers`` truncates the content before adding the special
tokens, so an over-long text keeps ``<end_of_text>`` as its last token, as OpenCLIP does.
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
import unicodedata
from functools import cache
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT = "<start_of_text>"
EOT = "<end_of_text>"
VOCAB_SIZE = 49408
SOT_ID = VOCAB_SIZE - 2
EOT_ID = VOCAB_SIZE - 1
PAD_ID = 0
_N_MERGES = 49152 - 256 - 2
# OpenCLIP's pattern (compiled there with IGNORECASE; the text is lower-cased before it runs).
SPLIT_PATTERN = f"{SOT}|{EOT}" + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# ftfy.fixes.remove_control_chars
_CONTROL_CHARS = [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070)]
_CONTROL_CHARS += [0xFEFF, *range(0xFFF9, 0xFFFD)]
# ftfy.chardata.LIGATURES
_LIGATURES = {
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž",  # noqa: RUF001
    "ǆ": "dž", "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
    "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",  # noqa: RUF001
}  # fmt: skip
# Python's Final_Sigma condition (preceded by a cased letter, no cased letter following).
_FINAL_SIGMA = r"(?<=\p{Cased})Σ(?!\p{Case_Ignorable}*\p{Cased})"
# Entities html.unescape resolves, in the order one pass must apply them: with a semicolon, then
# the legacy forms without one, and "&" last, so that "&amp;lt;" becomes "&lt;" in one pass and
# "<" only in the second, as with html.unescape.
_NAMED = (("lt", "<"), ("gt", ">"), ("quot", '"'), ("LT", "<"), ("GT", ">"), ("QUOT", '"'))
_ENTITIES = (
    *((f"&{name};", char) for name, char in _NAMED),
    ("&apos;", "'"), ("&#39;", "'"), ("&#x27;", "'"), ("&nbsp;", "\xa0"), ("&#160;", "\xa0"),
    *((f"&{name}", char) for name, char in _NAMED),
    ("&NBSP;", "\xa0"), ("&nbsp", "\xa0"), ("&amp;", "&"), ("&AMP;", "&"),
)  # fmt: skip


def _char_class(codepoints: list[int]) -> str:
    """A regex character class for ``codepoints``, as ranges of ``\\x{...}`` escapes."""
    ranges: list[tuple[int, int]] = []
    for cp in sorted(set(codepoints)):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    parts = [f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


def _width_map() -> dict[str, str]:
    """ftfy.fix_character_width: half/full-width forms to their NFKC form, U+3000 to space."""
    mapping = {"\u3000": " "}
    for cp in range(0xFF01, 0xFFF0):
        char = chr(cp)
        alternate = unicodedata.normalize("NFKC", char)
        if alternate != char:
            mapping[char] = alternate
    return mapping


def build_normalizer() -> normalizers.Normalizer:
    """The serving-time pre-clean (see the module docstring for what it does and does not do)."""
    steps: list[normalizers.Normalizer] = [
        normalizers.Replace(Regex(_char_class(_CONTROL_CHARS)), ""),
        *(normalizers.Replace(a, b) for a, b in _LIGATURES.items()),
        *(normalizers.Replace(a, b) for a, b in _width_map().items()),
        normalizers.Replace(Regex("[\\x{2bc}\\x{2018}-\\x{201b}]"), "'"),
        normalizers.Replace(Regex("[\\x{201c}-\\x{201f}]"), '"'),
        normalizers.NFC(),
    ]
    for _ in range(2):  # html.unescape(html.unescape(text))
        steps += [normalizers.Replace(a, b) for a, b in _ENTITIES]
        # "&amp" without a semicolon, but not the "&amp;" the step above just made.
        steps.append(normalizers.Replace(Regex("&(?:amp|AMP)(?!;)"), "&"))
    # " ".join(text.split()): Python's whitespace, which includes U+001C..U+001F.
    spaces = [cp for cp in range(sys.maxunicode + 1) if chr(cp).isspace()]
    steps += [
        normalizers.Replace(Regex(_char_class(spaces) + "+"), " "),
        normalizers.Strip(),
        # str.lower() gives a word-final capital sigma its final form; Lowercase would not.
        normalizers.Replace(Regex(_FINAL_SIGMA), "ς"),
        normalizers.Lowercase(),
    ]
    return normalizers.Sequence(steps)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-unicode table, in OpenCLIP's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    byte_values, chars = list(printable), list(printable)
    extra = 0
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, map(chr, chars), strict=True))


def default_bpe_path() -> Path:
    """``bpe_simple_vocab_16e6.txt.gz`` from the installed open_clip package (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "open_clip is not installed, so its BPE vocabulary cannot be found: pass bpe_path, "
            "or use the export venv (scripts/export-venv.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"open_clip has no {BPE_FILE} at {path}")
    return path


@cache
def _vocab_and_merges(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    if len(merges) != _N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path} is not OpenCLIP's BPE merge list")
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{path}: expected {VOCAB_SIZE} distinct tokens, got {len(vocab)}")
    return vocab, [(a, b) for a, b in merges]


def build_clip_tokenizer(bpe_path: Path | None = None) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equal to OpenCLIP's ``SimpleTokenizer`` (no padding or
    truncation stored: the serving side sets both from the manifest)."""
    vocab, merges = _vocab_and_merges(Path(bpe_path or default_bpe_path()))
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False)
    )
    tok.normalizer = build_normalizer()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}",
        pair=f"{SOT} $A {EOT} $B:1 {EOT}:1",
        special_tokens=[(SOT, SOT_ID), (EOT, EOT_ID)],
    )
    tok.decoder = decoders.Sequence(
        [decoders.ByteLevel(), decoders.Replace("</w>", " "), decoders.Strip(" ", 0, 1)]
    )
    # Matched after normalization, as OpenCLIP matches them in the cleaned, lower-cased text.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=True) for t in (SOT, EOT)])
    return tok


def write_clip_tokenizer(path: Path, bpe_path: Path | None = None) -> Path:
    build_clip_tokenizer(bpe_path).save(str(path), pretty=False)
    return path
