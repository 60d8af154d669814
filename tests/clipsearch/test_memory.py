"""The malloc arena limit (``clipsearch.memory``), observed in real processes: 16 threads that
allocate at once get glibc's arenas (``malloc_stats`` lists each) — many by default, at most
the limit once it is applied; a bad setting is a clear CLI error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from clipsearch.memory import arenas_wanted

PROGRAM = textwrap.dedent(
    """
    import ctypes, sys, threading
    from clipsearch.memory import limit_malloc_arenas
    if sys.argv[1] == "limit":
        print("limit", limit_malloc_arenas(), flush=True)
    start = threading.Barrier(16)
    def work():
        start.wait()
        for _ in range(200):
            blocks = [bytearray(4096) for _ in range(64)]  # malloc'd by each thread at once
            del blocks
    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
    """
)


def _arenas(mode: str, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX",)}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return len(re.findall(r"^Arena \d+:", done.stderr, re.M)), done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_limit_holds_where_the_default_makes_more_arenas() -> None:
    default, _ = _arenas("none")
    limited, said = _arenas("limit")
    assert said.strip() == "limit 2"
    assert default > 2, (
        default
    )  # glibc alone: more arenas than the limit (else this proves nothing)
    assert 1 <= limited <= 2
    # MALLOC_ARENA_MAX, when set, is glibc's own and wins: nothing is applied on top.
    _, untouched = _arenas("limit", MALLOC_ARENA_MAX="4")
    assert untouched.strip() == "limit None"
    zero, said_zero = _arenas("limit", CLIPSEARCH_MALLOC_ARENAS="0")
    assert said_zero.strip() == "limit None" and zero > 2


def test_the_setting_is_read_and_checked() -> None:
    assert arenas_wanted({}) == 2
    assert arenas_wanted({"CLIPSEARCH_MALLOC_ARENAS": " 3 "}) == 3
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(ValueError, match="CLIPSEARCH_MALLOC_ARENAS must be a whole number"):
            arenas_wanted({"CLIPSEARCH_MALLOC_ARENAS": bad})


def test_a_bad_setting_stops_the_cli_with_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clipsearch", "--help"],
        env={**os.environ, "CLIPSEARCH_MALLOC_ARENAS": "lots"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "CLIPSEARCH_MALLOC_ARENAS must be a whole number" in done.stderr
