"""Where a dataset's files live: a local path, an ``http(s)://`` URL or an ``s3://`` object.

Every location is checked before it is read, each by its own rule: a local path must be under the
allowed roots (``sources.allowed_roots``), an ``s3://`` URI under an allowed object-store prefix
(``--allow-root s3://bucket/pre``, kept in ``sources.allowed_prefixes``), and an http(s) URL is
fetched through the SSRF guard (``service.items.fetch``: no loopback or private address unless
``sources.allowed_networks`` lets it through). S3 is read with fsspec + s3fs; its credentials and
endpoint come from the standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL`` for MinIO and other S3-compatible stores, ``AWS_REGION``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from braceexpand import braceexpand

from indexer.sources.roots import Reader, allowed_roots, how_to_allow, under_roots
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid, too_large
from service.core.objects import s3_options
from service.core.schemas.sources import MAX_SHARDS
from service.items.fetch import Fetcher, validate_url

REMOTE_SCHEMES = ("http", "https", "s3")
# A shard or table fetched over http(s) is held in memory whole (the SSRF guard pins each
# connection to a vetted address, which fsspec's HTTP reader cannot); s3 and local files stream.
MAX_HTTP_OBJECT_BYTES = 1 << 30
# What a shard or a table may be served as (tar, parquet, octet-stream; CSV, TSV, JSONL).
OBJECT_TYPES = ("application/*", "text/*", "binary/*")


class ReadMetrics:
    """What dataset sources read, for ``/metrics``: units (shards, row ranges) read to their end
    and bytes read, by kind and by scheme (one registry per owner, as the gateway's; a Celery
    indexer's is its probe server's, ``indexer.distributed.resources``)."""

    def __init__(self, registry: Any = None) -> None:
        """``registry``: a ``prometheus_client.CollectorRegistry`` to count in (default: one
        of its own)."""
        from prometheus_client import CollectorRegistry, Counter

        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.units = Counter(
            "clipsearch_ingest_units_read_total",
            "Dataset units read to their end by ingestion jobs: webdataset shards, table row "
            "ranges, manifest line ranges (a resumed job does not read again those it finished)",
            ["kind"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "clipsearch_ingest_bytes_read_total",
            "Bytes of dataset files (shards, tables, manifests) read by ingestion jobs",
            ["scheme"],
            registry=self.registry,
        )

    def counter(self, location: str) -> Callable[[int], None]:
        child = self.bytes.labels(scheme_of(location) or "file")
        return child.inc


class _Counted:
    """A binary file that reports the bytes read through it."""

    def __init__(self, f: IO[bytes], add: Callable[[int], None]) -> None:
        self._f = f
        self._add = add

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._add(len(data))
        return data

    def readinto(self, buffer: Any) -> int | None:
        n = self._f.readinto(buffer)  # type: ignore[attr-defined]
        self._add(n or 0)
        return n  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def scheme_of(uri: str) -> str:
    """``s3``, ``http``, ``https``, ``file`` or ``""`` (a plain path)."""
    return uri.partition("://")[0].lower() if "://" in uri else ""


def expand_patterns(patterns: str | list[str]) -> list[str]:
    """Brace-expand shard patterns (``shards/{00000..00099}.tar``), in order, each once."""
    given = [patterns] if isinstance(patterns, str) else patterns
    shards: dict[str, None] = {}
    for pattern in given:
        for shard in braceexpand(pattern):
            shards[shard] = None
            if len(shards) > MAX_SHARDS:
                raise invalid(f"webdataset names more than {MAX_SHARDS} shards; the limit")
    return list(shards)


def how_to_allow_prefix(uri: str, reader: Reader) -> str:
    bucket_prefix = uri.rsplit("/", 1)[0]
    if reader == "indexer":
        return (
            f"to allow it, add {bucket_prefix} to CLIPSEARCH_SOURCES__ALLOWED_ROOTS of this "
            "`clipsearch indexer` and restart it"
        )
    return (
        f"to allow it, restart the gateway with `--allow-root {bucket_prefix}` or add it to "
        "CLIPSEARCH_SOURCES__ALLOWED_ROOTS (comma-separated)"
    )


def under_prefixes(uri: str, prefixes: list[str]) -> bool:
    """Whether ``s3://bucket/key`` is one of ``prefixes`` or under one (by path segment)."""
    if "/../" in uri + "/" or "/./" in uri + "/":
        return False
    return any(uri == p or uri.startswith(p + "/") for p in prefixes)


def checked_location(
    uri: str, settings: Settings, reader: Reader, *, base: str | None = None, what: str = "file"
) -> str:
    """``uri`` made absolute (a relative path against ``base``, the folder or prefix of the file
    that names it) and allowed for ``reader``, else ClipsearchError (forbidden names the
    setting). Existence is not checked here: reading reports a missing file by its name."""
    if not uri or "\0" in uri:
        raise invalid(f"{what} must be a path or an http(s):// or s3:// URI")
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        validate_url(uri)
        return uri
    if scheme == "s3":
        prefixes = settings.sources.allowed_prefixes
        if not under_prefixes(uri, prefixes):
            allowed = ", ".join(prefixes) or "none"
            raise ClipsearchError(
                ErrorType.forbidden,
                f"{what} {uri!r} is outside the allowed object-store prefixes ({allowed}); "
                + how_to_allow_prefix(uri, reader),
                {"allowed_prefixes": prefixes},
            )
        return uri
    if scheme == "file":
        uri = uri[len("file://") :]
    elif scheme:
        raise invalid(f"unsupported {what} scheme {scheme!r}; use a path, http(s):// or s3://")
    path = Path(uri).expanduser()
    if not path.is_absolute():
        if base is None:
            raise invalid(f"{what} {uri!r} is relative; give an absolute path")
        if scheme_of(base) in REMOTE_SCHEMES:
            return checked_location(f"{base}/{uri}", settings, reader, what=what)
        path = Path(base) / path
    real = path.resolve()
    roots = allowed_roots(settings)
    if not under_roots(real, roots):
        where = ", ".join(str(r) for r in roots) or "none configured"
        raise ClipsearchError(
            ErrorType.forbidden,
            f"{what} {uri!r} is outside the allowed roots ({where}); "
            + how_to_allow(real.parent, reader),
            {"allowed_roots": [str(r) for r in roots]},
        )
    return str(real)


def parent_of(location: str) -> str:
    """The folder or prefix that holds ``location`` (relative uris in a table resolve to it)."""
    return location.rsplit("/", 1)[0] if "/" in location else "."


def _s3() -> Any:
    import s3fs  # imported on first use: s3fs pulls in aiobotocore

    return s3fs.S3FileSystem(**s3_options())


@contextmanager
def open_location(
    location: str,
    settings: Settings,
    *,
    fetcher: Fetcher | None = None,
    metrics: ReadMetrics | None = None,
) -> Iterator[IO[bytes]]:
    """A checked location opened for reading in binary (its bytes counted in ``metrics``). A
    missing file raises ClipsearchError(not_found) naming it; other failures raise
    ClipsearchError too."""
    with _open(location, settings, fetcher) as f:
        yield f if metrics is None else _Counted(f, metrics.counter(location))  # type: ignore[misc]


@contextmanager
def _open(location: str, settings: Settings, fetcher: Fetcher | None) -> Iterator[IO[bytes]]:
    scheme = scheme_of(location)
    try:
        if scheme in ("http", "https"):
            own = fetcher is None
            fetcher = fetcher or Fetcher(settings)
            try:
                data = fetcher.fetch(location, accept=OBJECT_TYPES, max_bytes=MAX_HTTP_OBJECT_BYTES)
            finally:
                if own:
                    fetcher.close()
            yield io.BytesIO(data.data)
            return
        if scheme == "s3":
            with _s3().open(location, "rb") as f:
                yield f
            return
        with open(location, "rb") as f:
            yield f
    except FileNotFoundError as exc:
        raise ClipsearchError(ErrorType.not_found, f"{location} does not exist") from exc
    except PermissionError as exc:
        raise ClipsearchError(ErrorType.forbidden, f"{location}: permission denied") from exc
    except IsADirectoryError as exc:
        raise invalid(f"{location} is a folder, not a file") from exc


def read_object(location: str, settings: Settings, limit: int) -> bytes:
    """A whole ``s3://`` object or local file, refused past ``limit`` bytes."""
    if scheme_of(location) == "s3":
        fs = _s3()
        try:
            size = fs.size(location)
        except FileNotFoundError as exc:
            raise ClipsearchError(ErrorType.not_found, f"{location} does not exist") from exc
        if size is not None and size > limit:
            raise too_large(f"{location} is {size} bytes; the limit is {limit}")
        data: bytes = fs.cat_file(location)
        return data
    path = Path(location)
    size = path.stat().st_size
    if size > limit:
        raise too_large(f"{size} bytes; the limit is {limit}")
    return path.read_bytes()
