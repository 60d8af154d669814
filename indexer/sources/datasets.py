"""Dataset sources: webdataset tar shards and tables, read a unit at a time.

A dataset source is planned as **units**, never as one message per item: a webdataset source has
one unit per shard (after brace expansion), a parquet table one per row group (its row count from
the file's metadata), a local CSV, TSV or JSONL table one per ``TABLE_UNIT_LINES`` lines (a remote
one: one unit), a JSONL manifest file one per ``MANIFEST_UNIT_LINES`` lines (ranges found in one
pass; no cap on its lines). A unit is a small JSON
object (``{"shard": URI}``, ``{"table": URI, "row_group": i, "rows": n}``, ``{"table": URI}``,
``{"manifest": PATH, "start": byte, "end": byte, "first_line": n, "rows": n}``), so a job's plan
costs memory in proportion to its units, not its rows.

:func:`open_dataset` checks the source as a whole and raises before any work (a location outside
the allowed roots or prefixes, a table without one of the mapped columns: 4xx naming it); then
:func:`read_unit` streams one unit as :class:`~indexer.sources.read.SourceEntry` (an image or a
video read from a shard carries its bytes) or :class:`~indexer.sources.read.SourceError`, each
error naming the shard and key or the table and row. A shard that does not exist, or is damaged
from some member on, is one error for the shard; the other shards go on.

**Webdataset** (img2dataset's layout, WebDataset's conventions): members are grouped by key, the
path up to the first dot of the file name. ``jpg/jpeg/png/webp`` (and the other image suffixes)
give the image, ``txt`` the caption, ``json`` metadata (its ``caption``, ``description``, ``id``
and ``url`` keys are used as such: ``id`` names the item, else the key does; ``url`` is the
payload's ``uri``), ``mp4/webm`` a video. A key with text and no media is a text-only document.

**Tables** (parquet, CSV, TSV, JSONL by suffix; pyarrow reads them in batches): ``columns`` maps
the roles ``uri``, ``caption``, ``id``, ``description`` to the table's names (img2dataset's
``url_col``/``caption_col``); an unmapped role takes the column named like it (``url`` or ``uri``
for the uri) when there is one. Every other column is metadata. A row with a caption or a
description and no uri is a text-only document; a row's uri is a path (relative to the table's
folder), an http(s) URL or an ``s3://`` URI, checked like the table itself.

**Repeated ids** (the rule of every source): within a unit (a shard, a row range, a manifest's
range of lines, inline manifest lines, a URL list) the first occurrence of an id is indexed and
each later one is a failed item named by its place, the reason naming the first. Across units of
one job the same id is the same point: the later write replaces the earlier (point ids are
deterministic), and both count done.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from indexer.sources.objects import (
    ReadMetrics,
    checked_location,
    expand_patterns,
    open_location,
    parent_of,
    scheme_of,
)
from indexer.sources.read import (
    MEDIA_IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    SourceEntry,
    SourceError,
    SourceRead,
    _check_text,
    kind_of,
    manifest_file,
    read_manifest_range,
    text_entry_id,
)
from indexer.sources.roots import Reader
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.core.schemas.sources import COLUMN_ROLES, MAX_URL_CHARS, ColumnRole, SourceSpec
from service.items.fetch import Fetcher
from service.store.export import VECTOR_PREFIX, export_meta

TableFormat = Literal["parquet", "csv", "tsv", "jsonl"]
TABLE_SUFFIXES: dict[str, TableFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
IMAGE_EXTS = frozenset(s.lstrip(".") for s in MEDIA_IMAGE_SUFFIXES)
VIDEO_EXTS = frozenset(s.lstrip(".") for s in VIDEO_SUFFIXES)
# json keys of a webdataset sample that are the item's own fields, not metadata.
SAMPLE_FIELDS = ("caption", "description", "id", "url")
# WebDataset's key/extension split: the key is the path up to the first dot of the file name.
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
ROWS_PER_BATCH = 1024
# A manifest file is read in ranges of this many lines (repeated ids are caught within one).
MANIFEST_UNIT_LINES = 50_000
# A local CSV, TSV or JSONL table likewise.
TABLE_UNIT_LINES = 50_000
Unit = dict[str, Any]


@dataclass
class Dataset:
    """A checked dataset source: its units, and its item count where the files state it."""

    spec: SourceSpec
    units: list[Unit]
    known_items: int | None  # parquet's row counts; None while some unit's count is unknown
    columns: dict[ColumnRole, str] = field(default_factory=dict)
    reader: Reader = "gateway"
    export: dict[str, Any] | None = None  # a collection's export (``service.store.export``)


def is_dataset(spec: SourceSpec) -> bool:
    """Planned as units: webdataset shards, a table, a manifest file (ranges of lines)."""
    return spec.webdataset is not None or spec.table is not None or spec.manifest is not None


def open_dataset(
    spec: SourceSpec,
    settings: Settings,
    *,
    reader: Reader = "gateway",
    fetcher: Fetcher | None = None,
) -> Dataset:
    """Check a webdataset or table source and plan its units (raises ClipsearchError)."""
    if spec.webdataset is not None:
        shards = [
            checked_location(p, settings, reader, what="shard")
            for p in expand_patterns(spec.webdataset)
        ]
        return Dataset(spec, [{"shard": s} for s in shards], None, reader=reader)
    if spec.manifest is not None:
        path = manifest_file(spec.manifest, settings, reader)
        with path.open("rb") as f:
            ranges, lines = _line_ranges(f, str(path), MANIFEST_UNIT_LINES)
        return Dataset(spec, ranges, lines, reader=reader)
    assert spec.table is not None
    table = checked_location(spec.table, settings, reader, what="table")
    fmt = table_format(table)
    try:
        with open_location(table, settings, fetcher=fetcher) as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                meta = pq.ParquetFile(f).metadata
                arrow_schema = meta.schema.to_arrow_schema()
                names = list(arrow_schema.names)
                exported = export_meta(arrow_schema.metadata)
                rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
                units: list[Unit] = []
                first = 0
                for i, n in enumerate(rows):
                    units.append({"table": table, "row_group": i, "rows": n, "first_row": first})
                    first += n
                known: int | None = sum(rows)
            else:
                names = _text_table_names(f, fmt)
                units, known = _text_table_units(table, fmt)
                exported = None
    except ClipsearchError as exc:
        if exc.type is ErrorType.not_found:  # the request's own mistake, as for a manifest
            raise invalid(f"table {spec.table!r} does not exist or is not a file") from exc
        raise
    except Exception as exc:  # pyarrow's errors name what is wrong with the file
        raise invalid(f"table {spec.table!r} cannot be read as {fmt}: {exc}") from exc
    if exported is not None:  # its own columns: id, payload, vector.NAME
        return Dataset(spec, units, known, {}, reader, export=exported)
    columns = resolve_columns(names, spec.columns or {}, spec.table)
    return Dataset(spec, units, known, columns, reader)


def _text_table_units(table: str, fmt: TableFormat) -> tuple[list[Unit], int | None]:
    """A local CSV, TSV or JSONL table in ranges of ``TABLE_UNIT_LINES`` lines (one pass; a
    CSV's header is read again for each range), its data rows counted; a remote one is one
    unit (finding its lines would read it all twice)."""
    if scheme_of(table):
        return [{"table": table}], None
    header = 0 if fmt == "jsonl" else 1
    with open(table, "rb") as f:
        ranges, lines = _line_ranges(f, table, TABLE_UNIT_LINES)
    units: list[Unit] = []
    for r in ranges:
        first = int(r["first_line"])
        units.append(
            {
                "table": table,
                "start": r["start"],
                "end": r["end"],
                "first_line": first,
                "rows": r["rows"] - (header if first == 1 else 0),
                "first_row": max(0, first - 1 - header),
            }
        )
    return units, max(0, lines - header)


def table_format(location: str) -> TableFormat:
    name = location.split("?", 1)[0].lower()
    suffix = Path(name).suffix
    if suffix in (".gz", ".bz2", ".zst"):
        raise invalid(f"table {location!r} is compressed as a file; give it uncompressed")
    fmt = TABLE_SUFFIXES.get(suffix)
    if fmt is None:
        raise invalid(
            f"table {location!r}: unknown suffix {suffix or 'none'!r}; "
            f"use one of {', '.join(sorted(TABLE_SUFFIXES))}"
        )
    return fmt


def resolve_columns(
    names: list[str], given: Mapping[ColumnRole, str], table: str
) -> dict[ColumnRole, str]:
    """The table's column for each role: the mapped ones must exist (4xx naming them)."""
    have = set(names)
    for role, name in given.items():
        if name not in have:
            raise invalid(
                f"column {name!r} (columns.{role}) is not in table {table!r}; its columns are "
                f"{sorted(have)[:50]}",
                {"column": name, "role": role, "columns": sorted(have)[:200]},
            )
    columns: dict[ColumnRole, str] = dict(given)
    defaults: dict[ColumnRole, tuple[str, ...]] = {
        "uri": ("url", "uri"),
        "caption": ("caption",),
        "id": ("id",),
        "description": ("description",),
    }
    for role in COLUMN_ROLES:
        if role not in columns:
            found = next((n for n in defaults[role] if n in have), None)
            if found is not None and found not in columns.values():
                columns[role] = found
    if not {"uri", "caption", "description"} & set(columns):
        raise invalid(
            f"table {table!r} has no uri, caption or description column (its columns: "
            f"{sorted(have)[:50]}); map yours with columns, e.g. "
            '{"uri": "url", "caption": "caption"}'
        )
    return columns


def read_unit(
    dataset: Dataset,
    unit: Unit,
    settings: Settings,
    *,
    fetcher: Fetcher | None = None,
    metrics: ReadMetrics | None = None,
) -> Iterator[SourceRead]:
    """One unit's entries and errors, streamed; ``metrics`` counts its bytes, and the unit once
    read to its end."""
    kind = "shard" if "shard" in unit else "manifest" if "manifest" in unit else "table"
    yield from _read_unit(dataset, unit, settings, fetcher, metrics)
    if metrics is not None:
        metrics.units.labels(kind).inc()
        if kind == "manifest":
            end = unit.get("end")
            size = (end if end is not None else Path(unit["manifest"]).stat().st_size) - unit[
                "start"
            ]
            metrics.counter(unit["manifest"])(max(0, size))


def _read_unit(
    dataset: Dataset,
    unit: Unit,
    settings: Settings,
    fetcher: Fetcher | None,
    metrics: ReadMetrics | None,
) -> Iterator[SourceRead]:
    if "shard" in unit:
        yield from _read_shard(unit["shard"], settings, fetcher, metrics)
    elif "manifest" in unit:
        yield from read_manifest_range(
            Path(unit["manifest"]),
            int(unit["start"]),
            unit.get("end"),
            int(unit["first_line"]),
            settings,
            reader=dataset.reader,
        )
    else:
        yield from _read_table(dataset, unit, settings, fetcher, metrics)


def iter_dataset(
    dataset: Dataset, settings: Settings, *, fetcher: Fetcher | None = None
) -> Iterator[SourceRead]:
    """Every unit's reads, one unit after the other."""
    for unit in dataset.units:
        yield from read_unit(dataset, unit, settings, fetcher=fetcher)


def unit_name(unit: Unit) -> str:
    if "shard" in unit:
        return str(unit["shard"])
    if "manifest" in unit:
        return f"{unit['manifest']} from line {unit['first_line']}"
    if "row_group" in unit:
        return f"{unit['table']} row group {unit['row_group']}"
    if "first_line" in unit:
        return f"{unit['table']} from line {unit['first_line']}"
    return str(unit["table"])


def _line_ranges(f: IO[bytes], path: str, every: int) -> tuple[list[Unit], int]:
    """Units of ``every`` lines of a text file, by the byte offset where each starts (one pass
    in blocks, holding one block), and the file's line count."""
    cuts, lines, offset, last = [0], 0, 0, b""
    while block := f.read(1 << 20):
        need = len(cuts) * every - lines  # newlines in this block before the next cut
        newlines = block.count(b"\n")
        at = -1
        seen = 0
        while need <= newlines:
            while seen < need:
                at = block.find(b"\n", at + 1)
                seen += 1
            cuts.append(offset + at + 1)
            need += every
        lines, offset, last = lines + newlines, offset + len(block), block
    lines += bool(last) and not last.endswith(b"\n")  # a last line without its newline
    if len(cuts) > 1 and cuts[-1] >= offset:
        cuts.pop()  # the file ends exactly at a cut
    units: list[Unit] = []
    for i, start in enumerate(cuts):
        end = cuts[i + 1] if i + 1 < len(cuts) else None
        rows = every if end is not None else lines - i * every
        units.append(
            {
                "manifest": path,
                "start": start,
                "end": end,
                "first_line": i * every + 1,
                "rows": rows,
            }
        )
    return units, lines


# -- webdataset -------------------------------------------------------------------------------


def _read_shard(
    shard: str, settings: Settings, fetcher: Fetcher | None, metrics: ReadMetrics | None
) -> Iterator[SourceRead]:
    seen: dict[str, tuple[int, str]] = {}  # id → (sample number, key) of its first sample
    key = None
    try:
        with open_location(shard, settings, fetcher=fetcher, metrics=metrics) as f:
            for number, (key, files, too_big) in enumerate(_samples(f, settings)):
                read = _sample(shard, key, files, too_big, settings)
                if isinstance(read, SourceEntry):
                    first, first_key = seen.setdefault(read.id, (number, key))
                    if first != number:
                        read = SourceError(
                            f"{shard}#{key}@{number}",
                            f"shard {shard} key {key}: id {read.id!r} repeats key {first_key} "
                            "(the first is indexed)",
                        )
                yield read
    except ClipsearchError as exc:  # no such shard, refused, unreachable
        reason = exc.message if exc.message.startswith(shard) else f"{shard}: {exc.message}"
        yield SourceError(shard if key is None else f"{shard}#{key}", f"shard {reason}")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        after = f" after key {key}" if key is not None else ""
        yield SourceError(
            f"{shard}#{key}" if key is not None else shard,
            f"shard {shard} is damaged{after}: {exc or type(exc).__name__}; the rest of it "
            "is not read",
        )


def _samples(f: IO[bytes], settings: Settings) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """(key, {ext: bytes}, [exts refused as too large]) per sample, in shard order. A sample's
    members are consecutive in a shard (WebDataset's convention); a key that comes back later
    starts another sample (reported as a repeat by the caller)."""
    # Per member kind: an image or text past the upload limit, a video past the video limit,
    # is refused unread (the tar stream skips its bytes).
    image_limit, video_limit = settings.limits.max_upload_bytes, settings.video.max_bytes
    key: str | None = None
    files: dict[str, bytes] = {}
    too_big: list[str] = []
    with tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            match = _KEY_EXT.match(member.name)
            if match is None or Path(member.name).name.startswith("_"):
                continue  # no extension, or img2dataset's _stats.json and the like
            member_key, ext = match.group(1), match.group(2).lower()
            if member_key != key:
                if key is not None:
                    yield key, files, too_big
                key, files, too_big = member_key, {}, []
            if member.size > (video_limit if ext in VIDEO_EXTS else image_limit):
                too_big.append(ext)
                continue
            data = tar.extractfile(member)
            if data is not None:
                files[ext] = data.read()
    if key is not None:
        yield key, files, too_big


def _sample(
    shard: str, key: str, files: dict[str, bytes], too_big: list[str], settings: Settings
) -> SourceRead:
    where = f"shard {shard} key {key}"
    name = f"{shard}#{key}"
    try:
        if too_big:
            raise invalid(f"{', '.join(too_big)} member is larger than the limit")
        metadata: dict[str, Any] = {}
        if "json" in files:
            try:
                parsed = json.loads(files["json"].decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise invalid(f"{key}.json is not valid JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise invalid(f"{key}.json is not a JSON object")
            metadata = parsed
        own = {k: metadata.pop(k, None) for k in SAMPLE_FIELDS}
        caption_text = _text(files.get("txt"), f"{key}.txt")
        if caption_text is None and isinstance(own["caption"], str):
            caption_text = own["caption"]
        description = own["description"] if isinstance(own["description"], str) else None
        caption = _check_text("caption", caption_text, settings.limits)
        description = _check_text("description", description, settings.limits)
        given = own["id"]
        entry_id = str(given).strip() if isinstance(given, str | int) and given != "" else key
        if len(entry_id) > MAX_URL_CHARS:
            raise invalid(f"id is longer than {MAX_URL_CHARS} characters")
        url = own["url"] if isinstance(own["url"], str) and own["url"] else None
        image = next((e for e in files if e in IMAGE_EXTS), None)
        video = next((e for e in files if e in VIDEO_EXTS), None)
        if image is None and video is None:
            if caption is None and description is None:
                found = ", ".join(sorted(files)) or "nothing readable"
                raise invalid(f"no image, video or text member (found {found})")
            return SourceEntry(None, entry_id, caption, description, metadata, "text", where=where)
        ext = image if image is not None else video
        assert ext is not None
        uri = url if url is not None and len(url) <= MAX_URL_CHARS else f"{name}.{ext}"
        kind: Literal["image", "video"] = "image" if image is not None else "video"
        return SourceEntry(
            uri, entry_id, caption, description, metadata, kind, data=files[ext], where=where
        )
    except ClipsearchError as exc:
        return SourceError(name, f"{where}: {exc.message}")


def _text(data: bytes | None, what: str) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid(f"{what} is not UTF-8 text") from exc


# -- tables -----------------------------------------------------------------------------------


def _text_table_names(f: IO[bytes], fmt: TableFormat) -> list[str]:
    # Bad rows in the first block are reported when the table is read, not here.
    reader = _open_text_table(f, fmt, {}, None if fmt == "jsonl" else (lambda row: "skip"))
    return list(reader.schema.names)


def _open_text_table(
    f: IO[bytes], fmt: TableFormat, types: dict[str, Any], on_bad: Any = None
) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    if fmt == "jsonl":
        return pajson.open_json(
            f,
            read_options=pajson.ReadOptions(block_size=1 << 20),
            parse_options=pajson.ParseOptions(
                explicit_schema=None, unexpected_field_behavior="infer"
            ),
        )
    return pacsv.open_csv(
        f,
        read_options=pacsv.ReadOptions(block_size=1 << 20),
        parse_options=pacsv.ParseOptions(
            delimiter="\t" if fmt == "tsv" else ",", invalid_row_handler=on_bad
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )


def _read_table(
    dataset: Dataset,
    unit: Unit,
    settings: Settings,
    fetcher: Fetcher | None,
    metrics: ReadMetrics | None,
) -> Iterator[SourceRead]:
    table = unit["table"]
    fmt = table_format(table)
    shown = dataset.spec.table or table
    row = int(unit.get("first_row", 0))
    seen: dict[str, int] = {}
    bad: list[SourceError] = []
    try:
        with open_location(table, settings, fetcher=fetcher, metrics=metrics) as f:
            if "start" in unit:  # a range of lines (a CSV's header in front of it again)
                header = b""
                if fmt != "jsonl" and unit["start"] > 0:
                    f.seek(0)
                    header = f.readline()
                f.seek(unit["start"])
                f = io.BufferedReader(_Range(f, unit["end"], header))  # type: ignore[arg-type]
            for batch in _batches(f, fmt, unit, dataset.columns, bad, shown):
                yield from bad
                bad.clear()
                for values in batch.to_pylist():
                    row += 1
                    read = _row(dataset, shown, table, row, values, settings)
                    if isinstance(read, SourceEntry):
                        first = seen.setdefault(read.id, row)
                        if first != row:
                            read = SourceError(
                                f"{shown}#row={row}",
                                f"table {shown} row {row}: id {read.id!r} repeats row {first} "
                                "(the first is indexed)",
                            )
                    yield read
            yield from bad
    except ClipsearchError as exc:
        yield SourceError(f"{shown}#row={row + 1}", f"table {shown}: {exc.message}")
    except Exception as exc:  # pyarrow: a damaged file or a block it cannot parse
        yield SourceError(
            f"{shown}#row={row + 1}",
            f"table {shown} cannot be read from row {row + 1} on: {exc}; the rest of "
            f"{unit_name(unit)} is not read",
        )


class _Range(io.RawIOBase):
    """``prefix``, then a file from where it stands up to byte ``end`` (None: its end)."""

    def __init__(self, f: IO[bytes], end: int | None, prefix: bytes = b"") -> None:
        self._f = f
        self._left = None if end is None else end - f.tell()
        self._prefix = prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        size = len(view) if self._left is None else min(len(view), self._left)
        if size <= 0:
            return 0
        data = self._f.read(size)
        view[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
        return len(data)


def _batches(
    f: IO[bytes],
    fmt: TableFormat,
    unit: Unit,
    columns: Mapping[ColumnRole, str],
    bad: list[SourceError],
    shown: str,
) -> Iterator[Any]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(f).iter_batches(
            batch_size=ROWS_PER_BATCH, row_groups=[unit["row_group"]]
        )
        return
    import pyarrow as pa

    def on_bad(row: Any) -> str:
        where = f" line {row.number}" if row.number is not None else ""
        bad.append(
            SourceError(
                f"{shown}#row={row.number}",
                f"table {shown}{where}: {row.text[:200]!r} has {row.actual_columns} fields; "
                f"the header has {row.expected_columns}",
            )
        )
        return "skip"

    # The role columns are text whatever they look like (an id of digits stays "00012").
    types = {name: pa.string() for name in columns.values()} if fmt != "jsonl" else {}
    reader = _open_text_table(f, fmt, types, on_bad if fmt != "jsonl" else None)
    yield from reader


def _row(
    dataset: Dataset,
    shown: str,
    table: str,
    row: int,
    values: dict[str, Any],
    settings: Settings,
) -> SourceRead:
    where = f"table {shown} row {row}"
    name = f"{shown}#row={row}"
    columns = dataset.columns
    if dataset.export is not None:
        return _exported_row(dataset, values, where, name, settings)
    try:
        texts: dict[str, str | None] = {}
        for role in ("uri", "caption", "description", "id"):
            column = columns.get(role)  # type: ignore[call-overload]
            value = values.get(column) if column is not None else None
            if value is not None and not isinstance(value, str):
                if role == "id" and isinstance(value, int) and not isinstance(value, bool):
                    value = str(value)
                else:
                    raise invalid(f"column {column!r} ({role}) is not text")
            texts[role] = value
        caption = _check_text("caption", texts["caption"], settings.limits)
        description = _check_text("description", texts["description"], settings.limits)
        given = (texts["id"] or "").strip()
        if len(given) > MAX_URL_CHARS:
            raise invalid(f"id is longer than {MAX_URL_CHARS} characters")
        role_columns = set(columns.values())
        metadata = {k: _json_safe(v) for k, v in values.items() if k not in role_columns}
        raw_uri = (texts["uri"] or "").strip()
        if not raw_uri:
            if caption is None and description is None:
                raise invalid("no uri, caption or description")
            entry_id = given or text_entry_id(caption, description)
            return SourceEntry(None, entry_id, caption, description, metadata, "text", where=where)
        if len(raw_uri) > MAX_URL_CHARS:
            raise invalid(f"the uri is longer than {MAX_URL_CHARS} characters")
        base = parent_of(table)
        location = checked_location(raw_uri, settings, dataset.reader, base=base, what="uri")
        uri = location if scheme_of(location) else Path(location).as_uri()
        kind = kind_of(location.split("?", 1)[0])
        return SourceEntry(uri, given or uri, caption, description, metadata, kind, where=where)
    except ClipsearchError as exc:
        return SourceError(name, f"{where}: {exc.message}")


def _exported_row(
    dataset: Dataset, values: dict[str, Any], where: str, name: str, settings: Settings
) -> SourceRead:
    """A point of a collection's export: written as it is where the bundle matches (the entry's
    ``ready``), else embedded again from its payload's uri (only where this process may read
    it, as any row's), caption and description."""
    export = dataset.export or {}
    try:
        payload = json.loads(values["payload"])
    except (TypeError, ValueError, KeyError) as exc:
        return SourceError(name, f"{where}: the payload is not JSON: {exc}")
    if not isinstance(payload, dict):
        return SourceError(name, f"{where}: the payload is not a JSON object")
    vectors = {
        key[len(VECTOR_PREFIX) :]: value
        for key, value in values.items()
        if key.startswith(VECTOR_PREFIX) and value is not None
    }
    kind = {"image": "image", "video_segment": "video", "text": "text"}.get(
        str(payload.get("kind")), "image"
    )
    uri = payload.get("uri") if isinstance(payload.get("uri"), str) else None
    if uri is not None:
        location = uri[len("file://") :] if uri.startswith("file://") else uri
        try:
            location = checked_location(location, settings, dataset.reader, what="uri")
            uri = location if scheme_of(location) else Path(location).as_uri()
        except ClipsearchError:
            uri = None  # written as exported, or embedded again from its texts alone
    description = None if payload.get("description_generated") else payload.get("description")
    found = payload.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    ready = {
        "id": str(values["id"]),
        "vectors": vectors,
        "payload": payload,
        "bundle": export.get("bundle"),
    }
    return SourceEntry(
        uri,
        str(payload.get("media_id") or values["id"]),
        payload.get("caption"),
        description,
        metadata,
        kind,  # type: ignore[arg-type]
        where=where,
        ready=ready,
    )


def _json_safe(value: Any) -> Any:
    """A table cell as a JSON value for the payload (dates as ISO text, bytes dropped)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)
