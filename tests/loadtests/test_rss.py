"""The soak profile's memory figure: ``RssSampler`` reads a real process's resident memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from loadtests.loadtest import RssSampler, memory_line, rss_mb


def test_growth_after_the_warm_up_is_what_the_process_allocated() -> None:
    held: list[bytes] = []
    with RssSampler(os.getpid(), every_s=0.05, warmup_s=0.2) as sampler:
        time.sleep(0.4)  # samples after the warm-up, before the allocation
        held.append(b"\x01" * (300 << 20))  # written, so resident
        time.sleep(0.3)
    summary = sampler.summary()
    assert summary["samples"] >= 8
    grown_mb = summary["end_mb"] - summary["after_warmup_mb"]
    assert 250 < grown_mb < 400, summary
    assert summary["growth_after_warmup"] > 0
    assert "MB at the end (+" in memory_line(summary)
    held.clear()


def test_a_process_that_has_gone_has_no_rss_and_stops_the_sampler() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert rss_mb(child.pid) is None
    with RssSampler(child.pid, every_s=0.01) as sampler:
        time.sleep(0.1)
    assert sampler.summary() == {"samples": 0}
    assert memory_line(sampler.summary()) == "service RSS: no samples"
