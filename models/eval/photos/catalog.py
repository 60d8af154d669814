"""The real-photo corpus, pinned: which package version each photo comes from, and its bytes.

``catalog.jsonl`` beside this file lists the photos, one JSON object a line: ``id``,
``package`` (a key of :data:`PACKAGES`), ``file`` (under the package's photo folder), ``sha256``
of the bytes shipped in the pinned version, ``content`` (what a person sees in it), optional
``license`` (else the package's note), ``photograph`` and ``twin``.

Every photo was looked at before it was listed, and the queries were written from the photos.
Photographs only, with two deliberate exceptions marked ``"photograph": false`` (a clip-art
silhouette and a painting), kept because "a horse" and "a painting" are things people search for
and the ImageNet vocabulary is weak on both. Left out after looking: cartoons (HappyFish), renders
(Blender_Suzanne, ml), logos, synthetic test patterns (pic1-6, gradient, detect_blob, cards),
calibration series (left01-14 beyond one, right*), scanned text near-copies and tiny crops
(microaneurysms, lfw_subset). Debian wallpaper packages and Tux Paint stamps are never used:
the photo bundle's hyperparameters were tuned on them (``models/photo/dev/photos.tsv``), so
they must stay out of the test set.

``twin`` names another corpus photo of the same scene (a stereo pair, a second viewpoint): an
image→image query can legitimately find the twin first, and the report says when it did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

CATALOG_PATH = Path(__file__).with_name("catalog.jsonl")
SKIMAGE, SKLEARN, MATPLOTLIB, OPENCV = "scikit-image", "scikit-learn", "matplotlib", "opencv-doc"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    kind: Literal["wheel", "deb"]
    root: str  # the folder inside the wheel or the .deb's data tree that holds the photos
    license: str  # the note for its photos unless a photo carries its own

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class PhotoSpec:
    id: str
    package: str
    file: str
    sha256: str
    content: str
    license: str = ""
    photograph: bool = True
    twin: str | None = None

    @property
    def member(self) -> str:
        """The photo's path inside its package."""
        return PACKAGES[self.package].root + self.file

    @property
    def license_note(self) -> str:
        return self.license or PACKAGES[self.package].license


PACKAGES: dict[str, Package] = {
    SKIMAGE: Package(
        SKIMAGE,
        "0.26.0",
        "wheel",
        "skimage/data/",
        "per-image notes in skimage/data/_fetchers.py",
    ),
    SKLEARN: Package(
        SKLEARN,
        "1.9.1",
        "wheel",
        "sklearn/datasets/images/",
        "CC BY 2.0, Flickr photographers named in sklearn/datasets/images/README.txt",
    ),
    MATPLOTLIB: Package(
        MATPLOTLIB,
        "3.11.2",
        "wheel",
        "matplotlib/mpl-data/sample_data/",
        "US Navy photograph, public domain (the wheel carries no notice)",
    ),
    OPENCV: Package(
        OPENCV,
        "4.6.0+dfsg-12",
        "deb",
        "usr/share/doc/opencv-doc/examples/data/",
        "Debian opencv-doc, debian/copyright 'Files: *': Apache-2.0 AND BSD-3-Clause; upstream "
        "records no per-image provenance",
    ),
}


@cache
def photos() -> tuple[PhotoSpec, ...]:
    """Every catalogued photo, in catalog order (which is also ingestion order)."""
    out = []
    for line in CATALOG_PATH.read_text(encoding="utf-8").splitlines():
        if line.strip():
            spec = PhotoSpec(**json.loads(line))
            if spec.package not in PACKAGES:
                raise ValueError(f"catalog: photo {spec.id!r} names unknown {spec.package!r}")
            out.append(spec)
    return tuple(out)


def by_id() -> dict[str, PhotoSpec]:
    return {p.id: p for p in photos()}
