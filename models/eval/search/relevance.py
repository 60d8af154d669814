"""Fit the relevance curves of fused search: per kind of evidence, P(relevant | standardised score).

``service.search.fusion.RELEVANCE`` holds one logistic curve per kind of evidence a channel
gives about an item (a text query against a picture, against a description generated from the
picture's labels, against a text a person wrote): ``P = 1 / (1 + exp(-(slope * z + intercept)))``
of the channel's standardised score ``z`` (the cosine, in spreads above the bundle's null). This
module fits them on data that is *not* the mixed-kind evaluation's:

* ``picture`` and ``generated``: the photo bundle's dev set (``models/photo/dev``: 318 photos
  from Debian packages, 282 queries with the tags a match must carry), the photos added without
  text (so each gets the description the bundle generates), every query against every photo;
* ``text``: 60 demo scenes drawn with another seed than the evaluation's (``HELD_OUT_SEED``), with
  caption and description, against a paraphrase of each scene's caption (relevant: the scenes of
  the same coloured shapes), caption and description pairs pooled.

:func:`gather` reads the cosines through the public HTTP API of a gateway (single-channel
searches, paged through the whole collection); :func:`fit` standardises them by the bundle's
null and fits each kind by maximum likelihood (:func:`fit_logistic`, Newton's method). The
gateway comes from the composition root (``models`` may not import the service), as for
``clipsearch models eval-search``; the figures and the driver used for the shipped curves are in
``FUSION-DEV.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.eval.photos.api import Api, ApiError, HttpClient

HELD_OUT_SEED = 777  # the evaluation's scenes use 1234 (write_demo_dataset's default)
PAGE = 100  # the API's largest page
KINDS: tuple[str, ...] = ("picture", "generated", "text")


@dataclass(frozen=True)
class Curve:
    slope: float
    intercept: float
    pairs: int
    relevant: int

    def probability(self, z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * z + self.intercept)))


def fit_logistic(z: Sequence[float] | np.ndarray, relevant: Sequence[bool] | np.ndarray) -> Curve:
    """The maximum-likelihood ``slope``, ``intercept`` of P(relevant) = sigmoid(slope z + b)
    (Newton's method; a tiny ridge keeps a separable set finite)."""
    x = np.asarray(z, dtype=np.float64)
    y = np.asarray(relevant, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or not 0 < y.sum() < len(y):
        raise ValueError("need one score per pair and both relevant and unrelated pairs")
    design = np.column_stack([x, np.ones_like(x)])
    theta = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (y - p) - 1e-6 * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta += step
        if np.abs(step).max() < 1e-10:
            break
    return Curve(float(theta[0]), float(theta[1]), len(x), int(y.sum()))


def cosines(
    client: HttpClient, names: dict[str, str], text: str, mode: str, size: int
) -> dict[str, float]:
    """Every item's cosine to ``text`` in the single-channel ``mode`` (added-as id -> cosine;
    ``names``: point id -> added-as id), paged through the collection (``size`` items at most).
    Items tied on a page boundary may be missed: the store's order among equal scores is not
    the same from page to page (on the photo dev set: 47 of 89,676 generated-description pairs,
    photos whose generated descriptions are identical)."""
    out: dict[str, float] = {}
    for offset in range(0, size, PAGE):
        body = {"text": text, "mode": mode, "limit": PAGE, "offset": offset}
        response = client.post("/v1/search", json=body)
        if response.status_code != 200:
            raise ApiError(f"search {text!r} ({mode}): HTTP {response.status_code}")
        hits = response.json()["hits"]
        for hit in hits:
            out[names[hit["id"]]] = float(hit["score"])
        if len(hits) < PAGE:
            break
    return out


@dataclass(frozen=True)
class HeldOut:
    """The calibration pairs: per kind of evidence, the cosines and whether the pair matches."""

    cosines: dict[str, np.ndarray]
    relevant: dict[str, np.ndarray]


def gather(client: HttpClient, dev_root: Path, scenes_dir: Path) -> HeldOut:
    """Add the held-out items to the gateway's (empty) collection and read every pair's
    cosine. ``dev_root``: the unpacked Debian packages of the photo dev set
    (``models.photo.dev.devset.fetch``)."""
    from models.data.scenes import generate_scenes, write_demo_dataset
    from models.photo.dev.devset import load_photos, load_queries, photo_file

    api = Api(client)
    api.wait_ready()
    names: dict[str, str] = {}  # point id -> the id it was added as
    photos = load_photos()
    for n, photo in enumerate(photos):
        path = photo_file(dev_root, photo)
        item = f"dev-{n}"
        kind = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        names[api.add(item, image=(path.name, path.read_bytes(), kind))] = item
    paths = write_demo_dataset(scenes_dir, n=60, seed=HELD_OUT_SEED)
    for path in paths:
        caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        description = Path(f"{path.with_suffix('')}.desc.txt").read_text(encoding="utf-8").strip()
        point = api.add(
            path.stem,
            image=(path.name, path.read_bytes(), "image/png"),
            caption=caption,
            description=description,
        )
        names[point] = path.stem
    size = len(photos) + len(paths)
    xs: dict[str, list[float]] = {k: [] for k in KINDS}
    ys: dict[str, list[bool]] = {k: [] for k in KINDS}
    dev_ids = [f"dev-{n}" for n in range(len(photos))]
    for query in load_queries():
        match = {i for i, p in zip(dev_ids, photos, strict=True) if query.tags <= p.tags}
        for kind, mode in (("picture", "image"), ("generated", "description")):
            found = cosines(client, names, query.text, mode, size)
            for item in dev_ids:
                if item in found:
                    xs[kind].append(found[item])
                    ys[kind].append(item in match)
    scenes = generate_scenes(60, HELD_OUT_SEED)
    shapes = {s.id: tuple(sorted((o.colour, o.shape) for o in s.objects)) for s in scenes}
    for scene in scenes:
        text = (
            scene.captions["compositional"][1]
            if len(scene.objects) > 1
            else scene.captions["short"][2]
        )  # as the evaluation's scene queries (models.eval.search.testset.scene_queries)
        match = {i for i, s in shapes.items() if s == shapes[scene.id]}
        for mode in ("caption", "description"):
            found = cosines(client, names, text, mode, size)
            for item in shapes:
                if item in found:
                    xs["text"].append(found[item])
                    ys["text"].append(item in match)
    return HeldOut(
        {k: np.asarray(v) for k, v in xs.items()}, {k: np.asarray(v) for k, v in ys.items()}
    )


def fit(held_out: HeldOut, null: dict[str, tuple[float, float]]) -> dict[str, Curve]:
    """One curve per kind of evidence, on the standardised score (``null``: kind -> the
    bundle's null mean and spread for that kind's channel)."""
    out = {}
    for kind in KINDS:
        mean, spread = null[kind]
        out[kind] = fit_logistic((held_out.cosines[kind] - mean) / spread, held_out.relevant[kind])
    return out
