"""Load the dev photos and queries, fetch the Debian packages they come from, score rankings.

``photos.tsv`` names each photo by Debian package and path and gives it tags (its kind first);
``queries.tsv`` gives each query the tags a photo must all carry to be a match. The packages are
fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into one folder per package:
nothing is installed, and the build itself never needs them.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
PHOTOS_FILE = HERE / "photos.tsv"
QUERIES_FILE = HERE / "queries.tsv"
GROUPS = ("object", "category", "colour", "scene")


@dataclass(frozen=True)
class DevPhoto:
    package: str
    path: str
    tags: frozenset[str]
    kind: str


@dataclass(frozen=True)
class DevQuery:
    group: str
    text: str
    tags: frozenset[str]


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def load_photos(path: Path = PHOTOS_FILE) -> list[DevPhoto]:
    photos = []
    for package, rel, tags in _rows(path):
        names = [t.strip() for t in tags.split(",")]
        photos.append(DevPhoto(package, rel, frozenset(names), names[0]))
    return photos


def load_queries(path: Path = QUERIES_FILE) -> list[DevQuery]:
    queries = [DevQuery(g, text, frozenset(t.split(","))) for g, text, t in _rows(path)]
    unknown = {q.group for q in queries} - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown query groups {sorted(unknown)} in {path}")
    return queries


def packages(photos: list[DevPhoto]) -> list[str]:
    return sorted({p.package for p in photos})


def fetch(root: Path, photos: list[DevPhoto]) -> None:
    """Download and unpack every package the photos come from into ``root/<package>``."""
    root.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages(photos) if not (root / p).is_dir()]
    if not missing:
        return
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        subprocess.run(["apt-get", "download", *missing], cwd=tmp, check=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            package = deb.name.split("_", 1)[0]
            target = root / package
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target) + ".part"], check=True)
            shutil.move(str(target) + ".part", target)
            logger.info("unpacked %s", package)


def photo_file(root: Path, photo: DevPhoto) -> Path:
    return root / photo.package / photo.path


def relevance(photos: list[DevPhoto], queries: list[DevQuery]) -> np.ndarray:
    """bool [queries, photos]: the photo carries every tag of the query."""
    rel = np.array([[q.tags <= p.tags for p in photos] for q in queries], dtype=bool)
    empty = [q.text for q, row in zip(queries, rel, strict=True) if not row.any()]
    if empty:
        raise ValueError(f"queries with no matching dev photo: {empty}")
    return rel


@dataclass(frozen=True)
class Scores:
    r_at_1: float
    mean_rank: float  # rank of the first match, 1 is best
    map: float  # mean average precision

    def to_dict(self) -> dict[str, float]:
        return {"r_at_1": self.r_at_1, "mean_rank": self.mean_rank, "map": self.map}


def per_query(sims: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank of the first match, average precision) per query; ties broken by photo order."""
    order = np.argsort(-sims, axis=1, kind="stable")
    hits = np.take_along_axis(rel, order, axis=1)
    first = hits.argmax(axis=1) + 1
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return first, (precision * hits).sum(axis=1) / hits.sum(axis=1)


def _scores(first: np.ndarray, ap: np.ndarray) -> Scores:
    return Scores(float((first == 1).mean()), float(first.mean()), float(ap.mean()))


def score(sims: np.ndarray, rel: np.ndarray) -> Scores:
    """R@1, mean rank of the first match and mAP of ranking the photos by similarity."""
    return _scores(*per_query(sims, rel))


def score_groups(sims: np.ndarray, rel: np.ndarray, queries: list[DevQuery]) -> dict[str, Scores]:
    """Scores per query group and over all queries (``all``)."""
    first, ap = per_query(sims, rel)
    out = {"all": _scores(first, ap)}
    for group in GROUPS:
        idx = [i for i, q in enumerate(queries) if q.group == group]
        if idx:
            out[group] = _scores(first[idx], ap[idx])
    return out


def macro(groups: dict[str, Scores]) -> tuple[float, float]:
    """(macro R@1, macro mAP) over the query groups."""
    return (
        float(np.mean([groups[g].r_at_1 for g in GROUPS])),
        float(np.mean([groups[g].map for g in GROUPS])),
    )


def criterion(groups: dict[str, Scores]) -> float:
    """The dev set's selection criterion, higher is better: mean of macro R@1 and macro mAP."""
    return sum(macro(groups)) / 2
