"""Start order does not matter: a real `clipsearch serve` whose encoder worker is not listening
yet keeps trying with back-off (``startup.backoff_max_s``, 1 s here), names what it waits for in
``/health/ready`` and in one log line, stays live, refuses searches with 503 meanwhile, and is
ready and answering searches within seconds of a real `clipsearch worker` listening ~10 s later.
The scenario is ``loadtests/bench/late_start.py``, whose command line runs issue 19's 130-s
version with the default back-off."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.late_start import run_late_start

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_a_gateway_started_before_its_worker_is_ready_soon_after_it_listens(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    figures = run_late_start(tiny_bundle_dir, tmp_path, delay_s=10.0, backoff_max_s=1.0)
    print(figures)
    endpoint = figures["endpoint"]
    meanwhile = figures["while_waiting"]
    assert meanwhile["ready"] == {
        "ready": False,
        "reason": f"starting: waiting for encoder workers at {endpoint}",
        "waiting_for": {
            "what": f"encoder workers at {endpoint}",
            "last_error": meanwhile["ready"]["waiting_for"]["last_error"],
        },
    }
    assert meanwhile["live_status"] == 200  # waiting is progress: no restart
    assert meanwhile["search"]["error"] == {
        "type": "unavailable",
        "message": f"service is starting: waiting for encoder workers at {endpoint}",
        "detail": None,
    }
    assert figures["waited_s"] >= 10.0  # it kept trying: no fixed give-up
    # run_late_start raises unless the gateway was ready within 30 s of the worker listening;
    # with a 1-s cap it takes about one cap plus a reconnect (the figure is printed).
    assert figures["ready_after_worker_s"] < 30.0
    assert figures["first_search_status"] == 200
    # One line per change of what it waits for, not one per retry (it retried ~10 times).
    assert figures["waiting_log_lines"] == 1
    assert figures["reached_logged"] is True
