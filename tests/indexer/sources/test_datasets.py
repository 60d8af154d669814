"""Reading dataset sources (``indexer.sources.datasets``): webdataset shards in img2dataset's
layout, tables by suffix with a column map, and the errors that cost one item (or one shard's
rest), each naming its shard and key or its table and row."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from indexer.sources.datasets import iter_dataset, open_dataset
from indexer.sources.objects import under_prefixes
from indexer.sources.read import SourceEntry, SourceError, SourceRead
from service.core.config import LimitsSettings, Settings, SourcesSettings
from service.core.errors import ClipsearchError, ErrorType
from service.core.schemas.sources import SourceSpec
from tests.indexer.sources.datasets_support import jpeg, write_shards


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        sources=SourcesSettings.model_validate(
            {"allowed_roots": f"{tmp_path},s3://bucket/allowed/"}
        ),
        limits=LimitsSettings(max_upload_bytes=4096),
    )


def read(source: dict[str, object], settings: Settings) -> list[SourceRead]:
    return list(iter_dataset(open_dataset(SourceSpec.model_validate(source), settings), settings))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_img2dataset_shards_read_one_item_per_key(tmp_path: Path, settings: Settings) -> None:
    keys = write_shards(tmp_path / "s", 2, 3)
    reads = read({"webdataset": str(tmp_path / "s" / "{00000..00001}.tar")}, settings)
    assert [r.id for r in reads if isinstance(r, SourceEntry)] == keys
    first = reads[0]
    assert isinstance(first, SourceEntry) and first.kind == "image" and first.data is not None
    assert first.uri == f"https://images.example.org/{keys[0]}.jpg"  # the json's url
    assert first.metadata["key"] == keys[0] and "caption" not in first.metadata
    assert first.where == f"shard {tmp_path / 's' / '00000.tar'} key {keys[0]}"


def test_json_fields_text_only_samples_and_bad_members(tmp_path: Path, settings: Settings) -> None:
    meta = {"id": "custom-7", "description": "a described scene", "url": "https://x.org/7.png"}
    _tar(
        tmp_path / "mixed.tar",
        [
            ("dir/a.png", jpeg(1)),
            ("dir/a.json", json.dumps(meta).encode()),
            ("dir/b.txt", b"just words"),
            ("dir/c.cls", b"3"),
            ("dir/d.jpg", jpeg(2) + bytes(5000)),  # over max_upload_bytes
            ("dir/e.json", b"{broken"),
            ("dir/f.mp4", b"\x00\x00\x00\x18ftypmp42"),
            ("_stats.json", b"{}"),
        ],
    )
    a, b, c, d, e, f = read({"webdataset": str(tmp_path / "mixed.tar")}, settings)
    assert isinstance(a, SourceEntry) and (a.id, a.description, a.uri) == (
        "custom-7",
        "a described scene",
        "https://x.org/7.png",
    )
    assert isinstance(b, SourceEntry) and (b.kind, b.caption, b.uri) == ("text", "just words", None)
    assert isinstance(c, SourceError) and "no image, video or text" in c.reason
    assert isinstance(d, SourceError) and "dir/d" in d.reason and "larger than" in d.reason
    assert isinstance(e, SourceError) and "e.json is not valid JSON" in e.reason
    assert isinstance(f, SourceEntry) and f.kind == "video" and f.uri is not None
    assert f.uri.endswith("mixed.tar#dir/f.mp4")


def test_a_truncated_shard_keeps_what_came_before_and_names_where_it_broke(
    tmp_path: Path, settings: Settings
) -> None:
    write_shards(tmp_path / "s", 1, 4)
    whole = (tmp_path / "s" / "00000.tar").read_bytes()
    (tmp_path / "s" / "00000.tar").write_bytes(whole[: len(whole) // 2])
    reads = read({"webdataset": str(tmp_path / "s" / "00000.tar")}, settings)
    *good, broken = reads
    assert good and all(isinstance(r, SourceEntry) for r in good)
    assert isinstance(broken, SourceError) and "is damaged after key" in broken.reason
    assert "00000.tar" in broken.reason


def test_a_repeated_key_within_a_shard_is_a_failure_naming_the_first(
    tmp_path: Path, settings: Settings
) -> None:
    _tar(tmp_path / "r.tar", [("k1.txt", b"one"), ("k2.txt", b"two"), ("k1.txt", b"again")])
    one, two, again = read({"webdataset": str(tmp_path / "r.tar")}, settings)
    assert isinstance(one, SourceEntry) and isinstance(two, SourceEntry)
    assert isinstance(again, SourceError) and "repeats key k1" in again.reason


def test_tables_by_suffix_with_relative_uris_and_bad_rows(
    tmp_path: Path, settings: Settings
) -> None:
    (tmp_path / "img.jpg").write_bytes(jpeg(4))
    (tmp_path / "t.csv").write_text(
        "url,caption,score\nimg.jpg,a photo,0.5\n,only text,0.1\nx,y,z,too,many\n"
        "s3://bucket/elsewhere/a.jpg,refused,0.2\ns3://bucket/allowed/b.jpg,fine,0.3\n"
    )
    reads = read({"table": str(tmp_path / "t.csv")}, settings)
    entries = [r for r in reads if isinstance(r, SourceEntry)]
    errors = [r for r in reads if isinstance(r, SourceError)]
    assert [e.uri for e in entries] == [
        (tmp_path / "img.jpg").as_uri(),
        None,
        "s3://bucket/allowed/b.jpg",
    ]
    assert entries[0].metadata == {"score": 0.5}
    assert len(errors) == 2
    reasons = " | ".join(e.reason for e in errors)
    assert "has 5 fields" in reasons and "outside the allowed object-store prefixes" in reasons


def test_parquet_units_are_row_groups_and_a_missing_column_is_refused(
    tmp_path: Path, settings: Settings
) -> None:
    rows = [{"link": "", "text": f"row {i}"} for i in range(25)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=10)
    spec = SourceSpec(table=str(tmp_path / "t.parquet"), columns={"caption": "text"})
    dataset = open_dataset(spec, settings)
    assert [u["rows"] for u in dataset.units] == [10, 10, 5] and dataset.known_items == 25
    reads = list(iter_dataset(dataset, settings))
    assert len(reads) == 25 and reads[-1].where.endswith("row 25")  # type: ignore[union-attr]
    with pytest.raises(ClipsearchError) as missing:
        open_dataset(
            SourceSpec(table=str(tmp_path / "t.parquet"), columns={"uri": "url"}), settings
        )
    assert missing.value.type is ErrorType.invalid_input
    assert "'url' (columns.uri)" in missing.value.message
    with pytest.raises(ClipsearchError) as unknown:
        open_dataset(SourceSpec(table=str(tmp_path / "t.xlsx")), settings)
    assert "unknown suffix" in unknown.value.message


def test_locations_outside_roots_and_prefixes_are_refused(
    tmp_path: Path, settings: Settings
) -> None:
    for source in (
        {"webdataset": "/etc/{a,b}.tar"},
        {"webdataset": "s3://bucket/other/a.tar"},
        {"webdataset": "s3://bucket/allowed/../other/a.tar"},
        {"table": "s3://bucketx/allowed/t.parquet"},
    ):
        with pytest.raises(ClipsearchError) as refused:
            open_dataset(SourceSpec.model_validate(source), settings)
        assert refused.value.type is ErrorType.forbidden, source
    assert under_prefixes("s3://bucket/allowed/x/y.tar", ["s3://bucket/allowed"])
    assert not under_prefixes("s3://bucket/allowedx/y.tar", ["s3://bucket/allowed"])


def test_source_spec_shapes() -> None:
    with pytest.raises(ValidationError):
        SourceSpec.model_validate({"urls": ["https://a.org/x.png"], "columns": {"uri": "u"}})
    with pytest.raises(ValidationError):
        SourceSpec.model_validate({"table": "t.csv", "columns": {"picture": "u"}})
    with pytest.raises(ValidationError):
        SourcesSettings.model_validate({"allowed_roots": "gs://bucket/x"})
    assert SourceSpec.model_validate({"webdataset": ["a.tar", "b.tar"]}).kind == "webdataset"


def test_a_manifest_file_has_no_line_cap_and_is_read_in_ranges_of_lines(
    tmp_path: Path, settings: Settings
) -> None:
    manifest = tmp_path / "big.jsonl"
    with manifest.open("w") as f:
        for i in range(120_001):
            f.write(json.dumps({"id": f"d{i}", "description": f"text {i}"}) + "\n")
    dataset = open_dataset(SourceSpec(manifest=str(manifest)), settings)
    assert dataset.known_items == 120_001
    assert [(u["first_line"], u["rows"]) for u in dataset.units] == [
        (1, 50_000),
        (50_001, 50_000),
        (100_001, 20_001),
    ]
    reads = list(iter_dataset(dataset, settings))
    assert len(reads) == 120_001 and all(isinstance(r, SourceEntry) for r in reads)
    assert [r.id for r in reads[49_999:50_001]] == ["d49999", "d50000"]  # type: ignore[union-attr]


def test_repeats_in_a_manifest_are_caught_within_its_range_of_lines(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.sources.datasets as datasets

    monkeypatch.setattr(datasets, "MANIFEST_UNIT_LINES", 3)
    lines = [{"id": "a", "caption": "x"}, {"id": "b", "caption": "y"}, {"id": "a", "caption": "z"}]
    lines += [{"id": "a", "caption": "later range"}, "{not json"]
    (tmp_path / "m.jsonl").write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    a, b, repeat, later, broken = read({"manifest": str(tmp_path / "m.jsonl")}, settings)
    assert isinstance(a, SourceEntry) and isinstance(b, SourceEntry) and a.caption == "x"
    assert isinstance(repeat, SourceError) and repeat.item == "line 3"
    assert "repeats line 1 (the first is indexed)" in repeat.reason
    assert isinstance(later, SourceEntry) and later.caption == "later range"  # another range
    assert isinstance(broken, SourceError) and broken.item == "line 5"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_a_local_text_table_is_read_in_ranges_of_lines(
    fmt: str, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.sources.datasets as datasets

    monkeypatch.setattr(datasets, "TABLE_UNIT_LINES", 3)
    rows = [{"id": f"{i:03}", "caption": f"caption {i}", "n": i} for i in range(8)]
    path = tmp_path / f"t.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "," if fmt == "csv" else "\t"
        body = [sep.join(str(r[k]) for k in ("id", "caption", "n")) for r in rows]
        path.write_text("\n".join([sep.join(("id", "caption", "n")), *body]) + "\n")
    dataset = open_dataset(SourceSpec(table=str(path)), settings)
    assert dataset.known_items == 8 and len(dataset.units) == 3
    assert sum(u["rows"] for u in dataset.units) == 8
    reads = list(iter_dataset(dataset, settings))
    assert [r.id for r in reads] == [r["id"] for r in rows]  # type: ignore[union-attr]
    assert [r.where for r in reads] == [f"table {path} row {i}" for i in range(1, 9)]  # type: ignore[union-attr]
    assert reads[5].caption == "caption 5" and reads[5].metadata == {"n": 5}  # type: ignore[union-attr]
