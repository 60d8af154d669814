"""Stopping the processes a load test or benchmark started (standard library only: the locust
driver imports it)."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; a frozen (SIGSTOPped) process is resumed first
    so that it can act on SIGTERM. Returns once it has exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
