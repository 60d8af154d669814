"""Read an ingestion source (a :class:`SourceSpec`) as a stream of entries to index.

:func:`iter_source` checks the spec as a whole first and raises before any work (a directory
outside the allowed roots, a missing manifest, too many lines); then it yields one
:class:`SourceEntry` per thing to index, or a :class:`SourceError` for an entry whose failure is
its own, so one bad manifest line never stops the rest. Nothing is fetched or decoded here:
URLs are checked for syntax only (addresses are vetted by ``service.items.fetch`` when fetched).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import httpx

from indexer.sources.roots import (
    Reader,
    allowed_roots,
    how_to_allow,
    resolve_local_dir,
    under_roots,
)
from service.core.config import LimitsSettings, Settings
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.core.schemas.sources import MAX_URL_CHARS, SourceSpec
from service.items.fetch import validate_url

EntryKind = Literal["image", "video", "text"]
TextField = Literal["caption", "description"]
# Long captions are chunked for the caption multivector, so they may be far longer than the
# description, which the description embedder reads whole.
TEXT_LIMITS: dict[TextField, str] = {
    "caption": "max_caption_chars",
    "description": "max_text_chars",
}

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
CAPTION_SUFFIX = ".txt"
DESCRIPTION_SUFFIX = ".desc.txt"
# Formats Pillow decodes only with a plugin still count as images: a missing plugin is then
# reported for that file by the loader instead of the file being silently skipped.
MEDIA_IMAGE_SUFFIXES = IMAGE_SUFFIXES | {".heic", ".heif", ".avif"}
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi"})
# A media file's texts: same stem, these suffixes.
_TEXT_FILES: tuple[tuple[TextField, str], ...] = (
    ("caption", CAPTION_SUFFIX),
    ("description", DESCRIPTION_SUFFIX),
)
MANIFEST_KEYS = frozenset({"uri", "id", "caption", "description", "metadata"})
# Far above any legal line (captions are capped at 10,000 characters); bounds memory per line.
MAX_LINE_BYTES = 1 << 20
_UTF8_MAX = 4  # bytes per character


@dataclass(frozen=True)
class SourceEntry:
    """One thing to index. ``id`` is stable (the given id, else the uri, else a content hash
    for text-only entries), so ingesting the same source again replaces instead of adding."""

    uri: str | None
    id: str
    caption: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kind: EntryKind = "image"
    # A dataset member's bytes (an image or a video read from a tar shard): read from here,
    # never from ``uri`` (the sample's original URL, or ``SHARD#KEY.ext``).
    data: bytes | None = field(default=None, repr=False, compare=False, hash=False)
    # Where the entry came from, for its errors: ``shard S key K``, ``table T row N``.
    where: str | None = field(default=None, compare=False, hash=False)
    # A point exported by ``service.store.export``: ``{"id", "vectors", "payload", "bundle"}``,
    # written as it is where the bundle matches (else the entry is embedded again).
    ready: Mapping[str, Any] | None = field(default=None, repr=False, compare=False, hash=False)

    @property
    def is_url(self) -> bool:
        """Whether the media is fetched from an http(s) URL (not when its bytes are here)."""
        return (
            self.data is None
            and self.uri is not None
            and self.uri.startswith(("http://", "https://"))
        )


@dataclass(frozen=True)
class SourceError:
    """An entry that could not be read; ``item`` names it as a job error does."""

    item: str
    reason: str
    line: int | None = None


SourceRead = SourceEntry | SourceError
# A manifest line by number: JSON text, an already-parsed object, or why it could not be read.
NumberedLine = tuple[int, str | Mapping[str, Any] | ClipsearchError]


def iter_source(
    spec: SourceSpec, settings: Settings, *, reader: Reader = "gateway"
) -> Iterator[SourceRead]:
    """Check ``spec`` as a whole (raising :class:`ClipsearchError`), then stream its entries.
    ``reader``: the process reading it, whose setting an allowed-roots error names."""
    roots = settings.sources.allowed_roots
    if spec.webdataset is not None or spec.table is not None or spec.manifest is not None:
        from indexer.sources.datasets import iter_dataset, open_dataset  # it builds on this

        return iter_dataset(open_dataset(spec, settings, reader=reader), settings)
    if spec.directory is not None:
        return scan_media(resolve_local_dir(spec.directory, roots, reader), settings.limits)
    if spec.manifest_lines is not None:
        lines = enumerate(spec.manifest_lines, start=1)
        return parse_manifest(lines, None, settings, reader=reader)
    assert spec.urls is not None  # SourceSpec holds exactly one kind
    return _read_urls(spec.urls)


def kind_of(path: str) -> EntryKind:
    """A video by its suffix, else an image (the loader reports what is neither)."""
    return "video" if os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES else "image"


def text_entry_id(caption: str | None, description: str | None) -> str:
    """A text-only entry without an id is named by its content."""
    digest = hashlib.sha256(json.dumps([caption, description]).encode()).hexdigest()
    return f"text:{digest}"


def _check_text(
    name: TextField, text: str | None, limits: LimitsSettings, where: str = ""
) -> str | None:
    """Strip ``text``; refuse it past its limit (never truncate: the rest would be lost)."""
    if text is None:
        return None
    text = text.strip()
    setting = TEXT_LIMITS[name]
    limit: int = getattr(limits, setting)
    if len(text) > limit:
        raise invalid(
            f"{name}{where} is {len(text)} characters; the limit is {limit} (limits.{setting})"
        )
    return text or None


def _read_text_file(path: Path, name: TextField, limits: LimitsSettings) -> str | None:
    if not path.is_file():
        return None
    limit: int = getattr(limits, TEXT_LIMITS[name])
    if path.stat().st_size > limit * _UTF8_MAX + 4:  # slack for a BOM and a newline
        raise invalid(
            f"{name} file {path.name} is longer than {limit} characters "
            f"(limits.{TEXT_LIMITS[name]})"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid(f"{name} file {path.name} is not UTF-8 text") from exc
    return _check_text(name, text, limits, f" in {path.name}")


def scan_media(root: Path, limits: LimitsSettings) -> Iterator[SourceRead]:
    """Images and videos under ``root`` (recursive, sorted), each with its optional same-name
    ``.txt`` caption and ``.desc.txt`` description; and text-only documents: a ``KEY.txt``
    with no image or video named KEY beside it is a document whose text is its description
    (with a ``KEY.desc.txt`` too, that is the description and ``KEY.txt`` the caption), named by
    its file URI. Linked directories are not followed.

    The file types come from the directory listing itself, so a plain file costs no system
    call here and only a linked one is resolved (2,000 files: ~0.25 s with a resolve and two
    stats per file, a small share of ``make bench-ingest``'s whole job before this)."""
    unlisted: list[OSError] = []
    for folder, files in _walk(str(root), unlisted.append):
        yield from _unlisted(unlisted)
        names = {f.name for f in files}
        media = {
            stem
            for stem, suffix in map(os.path.splitext, names)
            if suffix.lower() in MEDIA_IMAGE_SUFFIXES | VIDEO_SUFFIXES
        }
        for file in files:
            stem, suffix = os.path.splitext(file.name)
            if suffix == CAPTION_SUFFIX and stem not in media:
                yield from _text_document(folder, file, stem, names, media, limits)
                continue
            if suffix.lower() not in MEDIA_IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                continue
            uri = Path(file.path).as_uri()
            if file.is_symlink():
                real = Path(file.path).resolve()
                if not under_roots(real, [root]) or not real.is_file():
                    yield SourceError(uri, "links outside the source folder or to no file")
                    continue
            elif not file.is_file(follow_symlinks=False):
                yield SourceError(uri, "not a regular file")
                continue
            texts: dict[TextField, str | None] = {"caption": None, "description": None}
            try:
                for name, text_suffix in _TEXT_FILES:
                    # A name not listed is no file: no stat for it.
                    if (text_file := stem + text_suffix) in names:
                        texts[name] = _read_text_file(Path(folder, text_file), name, limits)
            except ClipsearchError as exc:
                yield SourceError(uri, exc.message)
                continue
            except OSError as exc:
                yield SourceError(uri, f"cannot read its caption files: {exc.strerror or exc}")
                continue
            caption, description = texts["caption"], texts["description"]
            yield SourceEntry(uri, uri, caption, description, {}, kind_of(file.name))
    yield from _unlisted(unlisted)


def _text_document(
    folder: str,
    file: os.DirEntry[str],
    stem: str,
    names: set[str],
    media: set[str],
    limits: LimitsSettings,
) -> Iterator[SourceRead]:
    """``KEY.txt`` or ``KEY.desc.txt`` with no image or video KEY beside it: the text-only
    document KEY (once: from ``KEY.desc.txt`` only when there is no ``KEY.txt``)."""
    key = stem[: -len(".desc")] if stem.endswith(".desc") else stem
    if key in media or (key != stem and key + CAPTION_SUFFIX in names):
        return  # a media file's description, or read with KEY.txt
    uri = Path(file.path).as_uri()
    if file.is_symlink() or not file.is_file(follow_symlinks=False):
        yield SourceError(uri, "a text document must be a regular file, not a link")
        return
    try:
        if key == stem:  # KEY.txt, and KEY.desc.txt when there is one
            desc = key + DESCRIPTION_SUFFIX  # a name not listed is no file: no stat for it
            if desc in names and (
                described := _read_text_file(Path(folder, desc), "description", limits)
            ):
                caption = _read_text_file(Path(file.path), "caption", limits)
                yield SourceEntry(None, uri, caption, described, {}, "text")
                return
        text = _read_text_file(Path(file.path), "description", limits)
        if text is None:
            raise invalid(f"text document {file.name} is empty")
    except ClipsearchError as exc:
        yield SourceError(uri, exc.message)
        return
    except OSError as exc:
        yield SourceError(uri, f"cannot read it: {exc.strerror or exc}")
        return
    yield SourceEntry(None, uri, None, text, {}, "text")


def _walk(
    top: str, onerror: Callable[[OSError], None]
) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Each folder under ``top`` (itself first, then its subfolders by name, depth first) with
    its entries that are not folders, sorted by name; linked folders are entries, not walked."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            onerror(exc)
            continue
        yield folder, [e for e in entries if not e.is_dir(follow_symlinks=False)]
        stack += reversed([e.path for e in entries if e.is_dir(follow_symlinks=False)])


def _unlisted(failures: list[OSError]) -> Iterator[SourceError]:
    """Folders the walk could not list: reported, since their files would go missing unseen."""
    while failures:
        exc = failures.pop(0)
        yield SourceError(str(exc.filename), f"cannot list the folder: {exc.strerror or exc}")


def manifest_file(source: str, settings: Settings, reader: Reader) -> Path:
    """The manifest's resolved path, under the allowed roots and a file (else the error that
    names the setting). No limit on its lines: it is read a range of lines at a time
    (``indexer.sources.datasets``)."""
    if not source or "\0" in source:
        raise invalid("manifest must be a file path")
    roots = allowed_roots(settings)
    path = Path(source).expanduser().resolve()
    if not roots:
        raise ClipsearchError(
            ErrorType.forbidden,
            f"local ingestion is disabled: no allowed roots; {how_to_allow(path.parent, reader)}",
        )
    if not under_roots(path, roots):
        detail = {"allowed_roots": [str(r) for r in roots]}
        raise ClipsearchError(
            ErrorType.forbidden,
            f"manifest {source!r} is outside the allowed roots "
            f"({', '.join(str(r) for r in roots)}); {how_to_allow(path.parent, reader)}",
            detail,
        )
    if not path.is_file():
        raise invalid(f"manifest {source!r} does not exist or is not a file")
    return path


def read_manifest(
    path: Path, settings: Settings, *, reader: Reader = "gateway"
) -> Iterator[SourceRead]:
    """A JSONL manifest file; relative paths in it are relative to its folder."""
    with path.open("rb") as f:
        yield from parse_manifest(_file_lines(f), path.parent, settings, reader=reader)


def read_manifest_range(
    path: Path,
    start: int,
    end: int | None,
    first_line: int,
    settings: Settings,
    *,
    reader: Reader = "gateway",
) -> Iterator[SourceRead]:
    """The lines of a manifest file from byte ``start`` (a line's start, numbered
    ``first_line``) to byte ``end`` (the start of a later line, or the end of the file)."""
    with path.open("rb") as f:
        f.seek(start)
        lines = _file_lines(f, first=first_line, end=end)
        yield from parse_manifest(lines, path.parent, settings, reader=reader)


def _file_lines(f: BinaryIO, *, first: int = 1, end: int | None = None) -> Iterator[NumberedLine]:
    number = first - 1
    while (end is None or f.tell() < end) and (raw := f.readline(MAX_LINE_BYTES + 1)):
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):  # skip the rest of the overlong line
                raw = f.readline(MAX_LINE_BYTES)
            yield number, invalid(f"the line is longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            yield number, invalid("the line is not UTF-8 text")


def parse_manifest(
    lines: Iterable[NumberedLine],
    base: Path | None,
    settings: Settings,
    *,
    reader: Reader = "gateway",
) -> Iterator[SourceRead]:
    """Parse numbered manifest lines (JSON text, parsed objects or a read failure) into entries.
    A repeated id is that line's error: it would silently replace the earlier entry."""
    seen: dict[str, int] = {}
    for number, line in lines:
        if isinstance(line, str) and not line.strip():
            continue
        try:
            if isinstance(line, ClipsearchError):
                raise line
            entry = parse_manifest_line(line, base=base, settings=settings, reader=reader)
        except ClipsearchError as exc:
            yield SourceError(f"line {number}", f"line {number}: {exc.message}", number)
            continue
        first = seen.setdefault(entry.id, number)
        if first != number:
            # Named by its line, not its id: the id is the first line's item, which is indexed
            # (``indexer.sources.datasets`` states the rule for every source).
            reason = f"line {number}: id {entry.id!r} repeats line {first} (the first is indexed)"
            yield SourceError(f"line {number}", reason, number)
            continue
        yield entry


def _no_constant(name: str) -> None:
    # NaN and Infinity are not JSON, and would make the point's payload unserialisable later.
    raise ValueError(f"{name} is not a JSON value")


def parse_manifest_line(
    line: str | Mapping[str, Any],
    *,
    base: Path | None,
    settings: Settings,
    reader: Reader = "gateway",
) -> SourceEntry:
    """One manifest object ``{"uri", "id"?, "caption"?, "description"?, "metadata"?}``."""
    if isinstance(line, str):
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise invalid(f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
        except (ValueError, RecursionError) as exc:
            raise invalid(f"invalid JSON: {exc or 'nested too deeply'}") from exc
    else:
        obj = line
    if not isinstance(obj, dict):
        raise invalid("a manifest line must be a JSON object")
    unknown = sorted(set(obj) - MANIFEST_KEYS)
    if unknown:
        raise invalid(f"unknown keys {unknown}; allowed: {sorted(MANIFEST_KEYS)}")
    for key in ("uri", "caption", "description"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise invalid(f"{key} must be a string")
    given_id = obj.get("id")
    if given_id is not None and (isinstance(given_id, bool) or not isinstance(given_id, str | int)):
        raise invalid("id must be a string or an integer")
    entry_id = str(given_id).strip() if given_id is not None else ""
    if len(entry_id) > MAX_URL_CHARS:
        raise invalid(f"id is longer than {MAX_URL_CHARS} characters")
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise invalid("metadata must be a JSON object")
    caption = _check_text("caption", obj.get("caption"), settings.limits)
    description = _check_text("description", obj.get("description"), settings.limits)
    uri = (obj.get("uri") or "").strip() or None
    if uri is None:
        if caption is None and description is None:
            raise invalid("a line needs a uri, or a caption or description for a text-only entry")
        entry_id = entry_id or text_entry_id(caption, description)
        return SourceEntry(None, entry_id, caption, description, metadata, "text")
    uri, kind = _entry_uri(uri, base, settings, reader)
    return SourceEntry(uri, entry_id or uri, caption, description, metadata, kind)


def _entry_uri(
    uri: str, base: Path | None, settings: Settings, reader: Reader
) -> tuple[str, EntryKind]:
    """An http(s) URL as given, or a local path as its resolved ``file://`` URI (the same id a
    directory scan gives it), which must be a file under the allowed roots."""
    scheme = uri.partition(":")[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        if len(uri) > MAX_URL_CHARS:
            raise invalid(f"the URL is longer than {MAX_URL_CHARS} characters")
        return uri, kind_of(validate_url(uri).path)
    if scheme == "file":
        parsed = httpx.URL(uri)
        if parsed.host not in ("", "localhost"):
            raise invalid(f"{uri!r} names another host; file URIs must be local")
        path = Path(parsed.path)
    elif scheme:
        raise invalid(f"unsupported uri scheme {scheme!r}; use a path or an http(s) URL")
    else:
        path = Path(uri).expanduser()
    if not path.is_absolute():
        if base is None:
            raise invalid(f"{uri!r} is relative; inline manifest lines need absolute paths")
        path = base / path
    real = path.resolve()
    if not under_roots(real, allowed_roots(settings)):
        raise ClipsearchError(
            ErrorType.forbidden,
            f"{uri!r} is outside the allowed roots; {how_to_allow(real.parent, reader)}",
        )
    if not real.is_file():
        raise invalid(f"{uri!r} does not exist or is not a file")
    return real.as_uri(), kind_of(real.name)


def _read_urls(urls: list[str]) -> Iterator[SourceRead]:
    seen: dict[str, int] = {}
    for number, url in enumerate(urls, start=1):
        try:
            kind = kind_of(validate_url(url).path)
        except ClipsearchError as exc:
            yield SourceError(url, exc.message)
            continue
        first = seen.setdefault(url, number)
        if first != number:  # named by its place: the URL itself is the first one's item
            reason = f"URL {number}: the URL is listed more than once (first as URL {first}, "
            yield SourceError(f"URL {number}", reason + "which is indexed)", number)
            continue
        yield SourceEntry(url, url, kind=kind)
