"""Record files (``indexer.jobs.records``): atomic JSON writes, one file per record."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest

from indexer.jobs.records import RecordFiles
from service.store.files import write_json


def test_records_round_trip_and_load_in_name_order(tmp_path: Path) -> None:
    files = RecordFiles(tmp_path / "jobs", "job")
    for rid in ("b", "a"):
        files.write({"id": rid, "state": "queued"})
    files.write({"id": "a", "state": "completed"})  # replaced, not added
    assert files.read("a") == {"id": "a", "state": "completed"}
    assert [r["id"] for r in files.load_all()] == ["a", "b"]
    assert sorted(p.name for p in files.folder.iterdir()) == ["a.json", "b.json"]
    with pytest.raises(FileNotFoundError):
        files.read("missing")


def test_an_unreadable_record_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = RecordFiles(tmp_path, "reindex")
    files.write({"id": "good"})
    (tmp_path / "torn.json").write_text('{"id": "to')
    with caplog.at_level(logging.WARNING):
        assert files.load_all() == [{"id": "good"}]
    assert "unreadable reindex record" in caplog.text and "torn.json" in caplog.text


def test_a_failed_write_keeps_the_old_record_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.json"
    write_json(path, {"v": 1})

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_threads_writing_one_record_never_leave_it_torn(tmp_path: Path) -> None:
    """Each thread has its own temporary file: the record is always one whole write."""
    path = tmp_path / "r.json"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                write_json(path, {"writer": n, "i": i, "pad": "x" * 2000})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # a reader meanwhile sees whole records only
        if path.exists():
            assert json.loads(path.read_text())["pad"] == "x" * 2000
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(path.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
