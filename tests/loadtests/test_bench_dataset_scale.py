"""The dataset-scale benchmark (issue 22's 1,000,000-row acceptance), one short real run on the
tiny bundle and 20,000 rows: a real ``clipsearch serve`` (embedded) and a real deployment (Redis,
one ``clipsearch indexer``, a gateway with a broker). The strict figures belong to the 1M run
(``python -m loadtests.bench.dataset_scale``); this checks what no load can excuse: ``total``
reads every row, points become searchable while the job runs, and the cancel leaves nothing
behind."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loadtests.bench.dataset_scale import run_dataset_scale, table, write_table
from tests.redis_server import redis_binary

pytestmark = pytest.mark.slow

ROWS = 20_000


def test_the_table_has_several_row_groups_of_text_only_rows(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.parquet", 1000, row_groups=4)
    f = pq.ParquetFile(path)
    assert (f.metadata.num_rows, f.num_row_groups) == (1000, 4)
    rows = f.read_row_group(3).to_pylist()
    assert rows[-1]["key"] == "row-0000999" and rows[-1]["text"].endswith(" 999")


def _check(run: dict[str, object]) -> None:
    assert run["total"] == ROWS, run
    assert run["units_total"] == 20, run
    assert run["done_when_searchable"] < ROWS, run  # type: ignore[operator]
    assert run["state_after_cancel"] == "cancelled", run
    assert run["done_before_cancel"] < ROWS, run  # type: ignore[operator]


@pytest.mark.timeout(400)
def test_embedded_a_table_job_counts_every_row_at_once_and_cancels(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    report = run_dataset_scale(tiny_bundle_dir, tmp_path, rows=ROWS, modes=["embedded"])
    _check(report["embedded"])
    assert report["embedded"]["total_known"] is True  # from the parquet's metadata
    assert "redis_used_memory_mb" not in report["embedded"]
    assert "embedded" in table(report) and "distributed" not in table(report)


@pytest.mark.timeout(400)
def test_distributed_a_table_job_leaves_nothing_in_redis_after_the_cancel(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    redis_binary()  # skips without redis-server
    report = run_dataset_scale(tiny_bundle_dir, tmp_path, rows=ROWS, modes=["distributed"])
    run = report["distributed"]
    _check(run)
    assert run["redis_used_memory_mb"] > 0, run
    assert (run["index_tasks_left"], run["points_stream_left"], run["unacked_left"]) == (0, 0, 0)
