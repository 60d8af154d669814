"""A collection out as parquet shards, and the shape those files have for the way back in.

:func:`export_collection` scrolls the collection a page at a time and writes
``DEST/part-00000.parquet``, ``part-00001.parquet``... (``rows_per_file`` points each; a local
folder or an ``s3://`` prefix, through fsspec + s3fs with the standard AWS variables): the point
``id``, one column per named vector (``vector.image``: a list of floats; ``vector.caption``, a
multivector: a list of rows), and ``payload`` as JSON text. Each file's schema metadata holds
``clipsearch.export``: the collection, the bundle (name@version) that made the vectors, and the
vector names. The same files ingest back as a table source (``indexer.sources.datasets``): into
a collection served by the same bundle the vectors are written as they are, with no encoder
call; into another bundle's collection each row is embedded again from its payload (uri,
caption, description), as any table row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from service.core.config import SourcesSettings
from service.core.domain import MULTI_VECTORS, Record
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.core.objects import s3_options
from service.store.base import VectorStore

EXPORT_KEY = "clipsearch.export"
EXPORT_FORMAT = 1
VECTOR_PREFIX = "vector."
PAGE = 256


def check_destination(dest: str, sources: SourcesSettings) -> str:
    """An export writes only where ingestion may read: under an allowed root or object-store
    prefix (``--allow-root``); the destination made absolute."""
    if not dest or "\0" in dest:
        raise invalid("give a folder or an s3:// prefix to export to")
    if dest.startswith("s3://"):
        dest = dest.rstrip("/")
        if "/../" in dest + "/" or not any(
            dest == p or dest.startswith(p + "/") for p in sources.allowed_prefixes
        ):
            raise ClipsearchError(
                ErrorType.forbidden,
                f"{dest!r} is outside the allowed object-store prefixes "
                f"({', '.join(sources.allowed_prefixes) or 'none'}); allow it with "
                "`--allow-root s3://BUCKET/PREFIX` or CLIPSEARCH_SOURCES__ALLOWED_ROOTS",
            )
        return dest
    if "://" in dest:
        raise invalid(f"export to a folder or an s3:// prefix, not {dest!r}")
    path = Path(dest).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in sources.allowed_roots]
    if not any(path == r or r in path.parents for r in roots):
        raise ClipsearchError(
            ErrorType.forbidden,
            f"{dest!r} is outside the allowed roots ({', '.join(map(str, roots)) or 'none'}); "
            f"allow it with `--allow-root {path.parent}` or CLIPSEARCH_SOURCES__ALLOWED_ROOTS",
        )
    return str(path)


@contextmanager
def _open_for_write(location: str) -> Iterator[IO[bytes]]:
    if location.startswith("s3://"):
        import s3fs

        with s3fs.S3FileSystem(**s3_options()).open(location, "wb") as f:
            yield f
        return
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    with open(location, "wb") as f:
        yield f


def export_collection(
    store: VectorStore,
    collection: str,
    dest: str,
    *,
    bundle: str,
    rows_per_file: int = 10_000,
) -> dict[str, Any]:
    """Write every point of ``collection`` (as it reads now) under ``dest``; what was
    written: ``{"files", "points", "bundle", "vectors"}``."""
    dims = store.vector_dims(collection)
    names = sorted(dims)
    files: list[str] = []
    rows: list[Record] = []
    total = 0
    offset: str | None = None
    while True:
        page, offset = store.scroll(collection, limit=PAGE, offset=offset, with_vectors=True)
        rows += page
        while len(rows) >= rows_per_file or (offset is None and rows):
            chunk, rows = rows[:rows_per_file], rows[rows_per_file:]
            location = f"{dest}/part-{len(files):05d}.parquet"
            _write(location, chunk, names, collection=collection, bundle=bundle)
            files.append(location)
            total += len(chunk)
        if offset is None:
            break
    if not files:  # an empty collection is one file with no rows (and the metadata)
        location = f"{dest}/part-00000.parquet"
        _write(location, [], names, collection=collection, bundle=bundle)
        files.append(location)
    return {"files": files, "points": total, "bundle": bundle, "vectors": names}


def _write(
    location: str, records: Sequence[Record], names: list[str], *, collection: str, bundle: str
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {
        "id": pa.array([r.id for r in records], pa.string()),
        "payload": pa.array([json.dumps(r.payload) for r in records], pa.string()),
    }
    fields = [pa.field("id", pa.string()), pa.field("payload", pa.string())]
    for name in names:
        single = pa.list_(pa.float32())
        kind = pa.list_(single) if name in MULTI_VECTORS else single
        values = [r.vectors.get(name) for r in records]
        columns[VECTOR_PREFIX + name] = pa.array(values, kind)
        fields.append(pa.field(VECTOR_PREFIX + name, kind))
    meta = {
        "format": EXPORT_FORMAT,
        "collection": collection,
        "bundle": bundle,
        "vectors": names,
        "points": len(records),
    }
    schema = pa.schema(fields, metadata={EXPORT_KEY: json.dumps(meta)})
    table = pa.Table.from_pydict(columns, schema=schema)
    try:
        with _open_for_write(location) as f:
            pq.write_table(table, f)
    except PermissionError as exc:
        raise ClipsearchError(ErrorType.forbidden, f"cannot write {location}: {exc}") from exc
    except (OSError, ValueError) as exc:  # not a folder, no such bucket, disk full
        raise invalid(f"cannot write {location}: {getattr(exc, 'strerror', None) or exc}") from exc


def export_meta(schema_metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The ``clipsearch.export`` metadata of a parquet file's schema, or None."""
    raw = (schema_metadata or {}).get(EXPORT_KEY.encode())
    if raw is None:
        return None
    meta: dict[str, Any] = json.loads(raw)
    return meta
