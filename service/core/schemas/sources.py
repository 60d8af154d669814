"""What an ingestion job reads: a directory, a JSONL manifest (a file or inline lines), URLs,
webdataset tar shards (img2dataset's layout) or a table (parquet, CSV, TSV, JSONL) with a column
map. Shards, tables and a table's uris may be local paths, ``http(s)://`` or ``s3://``.

The gateway validates the ``source`` of ``POST /v1/ingest`` with :class:`SourceSpec` before it
enqueues anything; the indexer opens it with ``indexer.sources.read.iter_source``. The limits here
bound the request itself. Checks that belong to one entry (allowed roots, caption length, URL
syntax and address) happen while the source is read, so one bad line never fails the rest.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_SOURCE_ITEMS = 100_000
MAX_URL_CHARS = 2048
MAX_PATH_CHARS = 4096

# Shard patterns in one webdataset source, before and after brace expansion.
MAX_SHARD_PATTERNS = 1000
MAX_SHARDS = 100_000

SourceKind = Literal["directory", "manifest", "manifest_lines", "urls", "webdataset", "table"]
SOURCE_KINDS: tuple[SourceKind, ...] = (
    "directory",
    "manifest",
    "manifest_lines",
    "urls",
    "webdataset",
    "table",
)
# What a table's ``columns`` may map: the role of a column → the table's name for it.
ColumnRole = Literal["uri", "caption", "id", "description"]
COLUMN_ROLES: tuple[ColumnRole, ...] = ("uri", "caption", "id", "description")

PathText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]
UrlText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_URL_CHARS)
]


class SourceSpec(BaseModel):
    """Exactly one of the fields. A bare string is shorthand for ``{"directory": ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: PathText | None = Field(None, description="a folder under the allowed roots")
    manifest: PathText | None = Field(None, description="a JSONL file under the allowed roots")
    # Inline lines are JSON text (as in a file) or already-parsed objects (natural in a JSON body).
    manifest_lines: list[str | dict[str, Any]] | None = Field(
        None, min_length=1, max_length=MAX_SOURCE_ITEMS, description="JSONL manifest lines"
    )
    urls: list[UrlText] | None = Field(
        None, min_length=1, max_length=MAX_SOURCE_ITEMS, description="http(s) URLs of media"
    )
    webdataset: PathText | Annotated[list[PathText], Field(min_length=1)] | None = Field(
        None,
        description="tar shards (a path, http(s) or s3:// URI, brace patterns such as "
        "`shards/{00000..00099}.tar`; or a list of them): one item per key, KEY.jpg/png/webp "
        "the image, KEY.txt the caption, KEY.json metadata, KEY.mp4/webm a video",
    )
    table: PathText | None = Field(
        None,
        description="a parquet, CSV, TSV or JSONL table (by suffix; a path, http(s) or s3:// "
        "URI): one item per row",
    )
    columns: (
        dict[ColumnRole, Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None
    ) = Field(
        None,
        description="with `table`: the table's column for each role (uri, caption, id, "
        "description); by default the column named like the role (`url` for the uri); any "
        "other column becomes metadata",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        # Keeps the foundation's `{"source": "/path"}` requests meaning what they meant.
        return {"directory": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        given = [name for name in SOURCE_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a source needs exactly one of {', '.join(SOURCE_KINDS)}; got {given or 'none'}"
            )
        if self.columns is not None and self.table is None:
            raise ValueError("columns go with a table source only")
        if isinstance(self.webdataset, list) and len(self.webdataset) > MAX_SHARD_PATTERNS:
            raise ValueError(
                f"webdataset lists {len(self.webdataset)} patterns; the limit is "
                f"{MAX_SHARD_PATTERNS} (each may be a brace pattern)"
            )
        return self

    @property
    def kind(self) -> SourceKind:
        return next(name for name in SOURCE_KINDS if getattr(self, name) is not None)
