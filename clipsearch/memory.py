"""glibc's malloc arenas: at most ``CLIPSEARCH_MALLOC_ARENAS`` (default 2) per process.

glibc gives each thread that meets a locked arena a new one, up to 8 per core; a gateway runs
dozens of threads (the HTTP thread pool, encoder lanes, decode threads, gRPC), each arena keeps
its own free memory, and resident memory creeps up for minutes under a steady load. Two arenas
kept it flat in the 10-minute soak (README "Load tests": +1.3 % against +8.4 % in the run beside
it). Set at the very start of the process, before any thread: ``mallopt(M_ARENA_MAX)``, what
the ``MALLOC_ARENA_MAX`` variable does (that variable, when set, wins). 0 = glibc's default."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2
SETTING = "CLIPSEARCH_MALLOC_ARENAS"


def arenas_wanted(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """The arena limit the environment asks for; ValueError naming the setting if it is bad."""
    raw = environ.get(SETTING, "").strip()
    if not raw:
        return DEFAULT_ARENAS
    try:
        wanted = int(raw)
    except ValueError:
        wanted = -1
    if wanted < 0:
        raise ValueError(
            f"{SETTING} must be a whole number >= 0 (0 = glibc's default), not {raw!r}"
        )
    return wanted


def limit_malloc_arenas(environ: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """Apply :func:`arenas_wanted`; the limit set, or None where nothing was done (glibc's
    ``MALLOC_ARENA_MAX`` is set, the limit is 0, or this is not glibc)."""
    wanted = arenas_wanted(environ)
    if wanted == 0 or environ.get("MALLOC_ARENA_MAX"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or getattr(libc, "gnu_get_libc_version", None) is None:
        return None  # musl and others: no arenas to limit
    return wanted if mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(wanted)) == 1 else None
