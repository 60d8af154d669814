"""The encoder benchmark's arithmetic, and one short real run on the tiny bundle."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipsearch.cli.main import app
from loadtests.bench.load import closed_loop, in_window, percentiles
from service.core.errors import ClipsearchError, ErrorType


def test_percentiles_of_known_latencies() -> None:
    stats = percentiles(np.arange(1, 101, dtype=float))
    assert stats["n"] == 100 and stats["max_ms"] == 100.0
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p99_ms"] == pytest.approx(99.01)
    assert percentiles(np.asarray([])) == {"n": 0}


def test_a_call_counts_for_throughput_when_it_ends_in_the_window() -> None:
    """Window [10, 14]: a call under way when it opens completes its items inside it (counted
    for throughput, not for latency); one that ends after it closes counts for neither."""
    assert in_window(10.5, 11.0, 10.0, 14.0) == (True, True)
    assert in_window(9.3, 10.4, 10.0, 14.0) == (True, False)
    assert in_window(13.8, 14.2, 10.0, 14.0) == (False, False)
    assert in_window(9.0, 9.9, 10.0, 14.0) == (False, False)
    # In a closed loop of 0.7 s calls, 4 s window: whole calls inside miss about a sixth.
    calls = [(t, t + 0.7) for t in np.arange(9.05, 15.0, 0.7)]
    ended = sum(in_window(a, b, 10.0, 14.0)[0] for a, b in calls)
    whole = sum(in_window(a, b, 10.0, 14.0)[1] for a, b in calls)
    assert (ended, whole) == (6, 5)


def test_closed_loop_counts_items_and_refusals_inside_the_window() -> None:
    lock = threading.Lock()
    calls = {"n": 0}

    def call(index: int) -> int:
        with lock:
            calls["n"] += 1
            turn = calls["n"]
        threading.Event().wait(0.002)
        if index == 0:
            raise ClipsearchError(ErrorType.overloaded, "full")
        if index == 1 and turn % 2:
            raise ClipsearchError(ErrorType.timeout, "late")
        return 3

    result = closed_loop(call, 3, 0.3, warmup_s=0.05, backoff_s=0.01)
    served = result.samples
    refused = result.latencies_ms(refused=True)
    assert served and refused.size
    # Throughput also counts the one call per client that was under way when the window opened.
    inside = sum(s.items for s in served)
    assert inside <= result.completed <= inside + 3 * 2
    assert result.items_per_s == pytest.approx(result.completed / 0.3)
    assert {s.items for s in served} == {0, 3}  # failed calls complete nothing
    assert result.errors.get("timeout", 0) > 0  # other errors are counted, not hidden
    assert refused.min() >= 2.0  # each refusal took the call's 2 ms


@pytest.mark.slow
def test_a_short_real_run_writes_the_report(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "encoder",
            "--bundle",
            str(tiny_bundle_dir),
            "--seconds",
            "0.5",
            "--clients",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "encoder.json").read_text())
    for tower in ("text", "image"):
        for transport in ("inprocess", "grpc"):
            entry = report["towers"][tower][transport]
            assert entry["served_items_per_s"] > 0, entry
            assert entry["ratio"] == pytest.approx(
                entry["served_items_per_s"] / entry["ceiling_items_per_s"]
            )
            assert entry["latency_idle"]["n"] > 0 and entry["latency_under_bulk"]["n"] > 0
            assert entry["errors"] == {}
    assert report["padding"]["speedup"] > 0
    stages = report["ceiling"]["image"]["preprocess_ms"]
    assert set(stages) == {"decode", "resize", "normalise"} and all(v > 0 for v in stages.values())
    assert report["overload"]["refused"]["n"] > 0  # 10x the lane: the excess was refused
    assert "ratio" in result.output
