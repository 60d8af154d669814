"""The real-photo evaluation of one served bundle, through the public HTTP API only.

:func:`evaluate_photos` takes an ``httpx.Client`` (or any :class:`~.api.HttpClient`) whose base
URL is a running gateway with an empty collection, and:

1. adds every photo with ``POST /v1/items`` — file and id, no caption, no description (what
   an uncaptioned photo library looks like);
2. runs every text query in the default mode (no ``mode`` sent: what a user gets) and in each
   explicit mode, ranking the whole collection;
3. queries each photo's near-duplicates (centre crop, flip, JPEG 40) by upload;
4. the mixed-collection check: adds captioned scenes and text-only documents, reruns the
   object queries in the default mode and reports which matching photos left the top 5; and
   the same for reciprocal-rank fusion of the three single-channel searches (``image``,
   ``caption``, ``description``), fused here from their API results: the ablation of the
   gateway's fusion, before and after the items are added.

It returns a JSON-ready dict; ``report`` turns one per bundle into the Markdown section.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.eval.photos.api import Api, Hits, HttpClient
from models.eval.photos.catalog import PACKAGES
from models.eval.photos.corpus import Corpus
from models.eval.photos.metrics import best_rank, kept_in_top, reciprocal_rank_fusion, summarise
from models.eval.photos.transforms import TRANSFORMS, near_duplicate

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
QUERIES_PATH, DOCUMENTS_PATH = HERE / "queries.jsonl", HERE / "documents.jsonl"
KINDS: tuple[str, ...] = ("object", "category", "scene", "colour", "description")
EXPLICIT_MODES: tuple[str, ...] = ("image", "caption", "description", "hybrid")
SEARCH_LIMIT = 100  # the API's largest page: the whole photo collection fits in one
NEAR_DUP_LIMIT = 10
TOP_KEPT = 3  # hits kept per query in the JSON, for the report's examples
MIXED_TOP = 5
RRF_CHANNELS: tuple[str, ...] = ("image", "caption", "description")
_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass(frozen=True)
class TextQuery:
    text: str
    kind: str
    relevant: tuple[str, ...]


@dataclass(frozen=True)
class EvalImage:
    id: str
    data: bytes
    filename: str
    source: str = ""
    twin: str | None = None

    @property
    def upload(self) -> tuple[str, bytes, str]:
        suffix = Path(self.filename).suffix.lower()
        return self.filename, self.data, _CONTENT_TYPES.get(suffix, "application/octet-stream")


@dataclass(frozen=True)
class CaptionedItem:
    id: str
    image: EvalImage
    caption: str
    description: str | None = None  # the scene's own, as `make run`'s demo scenes carry it


@dataclass(frozen=True)
class Document:
    id: str
    text: str


def load_queries(path: Path = QUERIES_PATH) -> list[TextQuery]:
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind") not in KINDS or not row.get("text") or not row.get("relevant"):
            raise ValueError(f"{path}:{n}: needs text, kind in {KINDS} and relevant ids")
        out.append(TextQuery(row["text"], row["kind"], tuple(row["relevant"])))
    return out


def load_documents(path: Path = DOCUMENTS_PATH) -> list[Document]:
    rows = [json.loads(line) for line in Path(path).read_text("utf-8").splitlines() if line]
    return [Document(r["id"], r["text"]) for r in rows]


def corpus_images(corpus: Corpus) -> list[EvalImage]:
    """The assembled photos, in catalog order, ready to upload."""
    return [
        EvalImage(
            p.id,
            p.path.read_bytes(),
            p.path.name,
            source=f"{PACKAGES[p.spec.package].pin}:{p.spec.member}",
            twin=p.spec.twin,
        )
        for p in corpus.photos
    ]


def demo_captioned(folder: Path, n: int = 60) -> list[CaptionedItem]:
    """The demo scenes (``models.data.scenes``) with their short captions and descriptions."""
    from models.data.scenes import write_demo_dataset

    items = []
    for path in write_demo_dataset(folder, n=n):
        caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        description = Path(f"{path.with_suffix('')}.desc.txt").read_text(encoding="utf-8").strip()
        image = EvalImage(path.stem, path.read_bytes(), path.name)  # "scene-0007"
        items.append(CaptionedItem(image.id, image, caption, description))
    return items


def evaluate_photos(
    client: HttpClient,
    images: Sequence[EvalImage],
    queries: Sequence[TextQuery],
    *,
    modes: Sequence[str] = EXPLICIT_MODES,
    captioned: Sequence[CaptionedItem] = (),
    documents: Sequence[Document] = (),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = progress or logger.info
    api = Api(client)
    ready = api.wait_ready()
    started = time.perf_counter()
    say(f"photos: adding {len(images)} images, no captions or descriptions")
    for image in images:
        api.add(image.id, image=image.upload, metadata={"eval": "photos", "source": image.source})
    ids = {image.id for image in images}
    usable = [q for q in queries if set(q.relevant) & ids]
    usable = [TextQuery(q.text, q.kind, tuple(r for r in q.relevant if r in ids)) for q in usable]
    size = len(images)
    say(f"photos: {len(usable)} text queries in the default mode and {len(modes)} explicit modes")
    default = _run_queries(api, usable, None, size)
    by_mode = {m: _run_queries(api, usable, m, size) for m in modes}
    say(f"photos: {len(images) * len(TRANSFORMS)} near-duplicate image queries")
    near = _near_duplicates(api, images)
    mixed = None
    if captioned or documents:
        say(f"photos: mixed collection (+{len(captioned)} captioned, +{len(documents)} texts)")
        objects = [q for q in usable if q.kind == "object"]
        rrf_before = [_rrf(api, q.text) for q in objects]
        mixed = _mixed(api, usable, default["queries"], captioned, documents, ids)
        mixed["rrf_ablation"] = _rrf_kept(api, objects, rrf_before)
        # Then the scenes as `make run` serves them: caption and description (a third vector).
        described = [c for c in captioned if c.description]
        if described:
            again = _mixed(api, usable, default["queries"], described, documents, ids, True)
            again["rrf_ablation"] = _rrf_kept(api, objects, rrf_before)
            mixed["described"] = again
    return {
        "bundle": ready.get("model") or default["model"],
        "collection_size": size,
        "images": [
            {"id": im.id, "source": im.source, "description": api.item(im.id).get("description")}
            for im in images
        ],
        "queries_given": len(queries),
        "queries_run": len(usable),
        "default_mode": default,
        "modes": {m: {k: v for k, v in r.items() if k != "queries"} for m, r in by_mode.items()},
        "mode_ranks": {m: [q["rank"] for q in r["queries"]] for m, r in by_mode.items()},
        "near_duplicates": near,
        "mixed": mixed,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


def _top(hits: Hits, n: int = TOP_KEPT) -> list[dict[str, Any]]:
    return [
        {"id": i, "score": round(float(h["score"]), 4), "description": h.get("description")}
        for i, h in list(zip(hits.ids, hits.hits, strict=True))[:n]
    ]


def _run_queries(
    api: Api, queries: Sequence[TextQuery], mode: str | None, size: int
) -> dict[str, Any]:
    records, channels, model = [], set(), ""
    for q in queries:
        hits = api.search_text(q.text, mode=mode, limit=min(SEARCH_LIMIT, max(size, 1)))
        channels.update(hits.channels)
        model = hits.model
        rank = best_rank(hits.ids, q.relevant)
        row = {**_query_row(q), "rank": rank, "top": _top(hits), "top5": hits.ids[:MIXED_TOP]}
        records.append(row)
    return {
        "mode": mode or "default",
        "model": model,
        "channels": sorted(channels),
        "per_kind": _per_kind(records, size),
        "all": summarise([r["rank"] for r in records], size),
        "queries": records,
    }


def _rrf(api: Api, text: str) -> list[str]:
    """Reciprocal-rank fusion of the single-channel searches, as the gateway fused before."""
    rankings = [api.search_text(text, mode=m, limit=SEARCH_LIMIT).ids for m in RRF_CHANNELS]
    return reciprocal_rank_fusion(rankings)


def _rrf_kept(
    api: Api, objects: Sequence[TextQuery], before: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """How many matching photos reciprocal-rank fusion keeps in its top 5 once the captioned
    and text-only items are in: ``before`` is its ranking on the photos alone."""
    pairs = kept = 0
    for q, ranking in zip(objects, before, strict=True):
        stayed, gone = kept_in_top(q.relevant, ranking, _rrf(api, q.text), MIXED_TOP)
        pairs, kept = pairs + len(stayed) + len(gone), kept + len(stayed)
    return {"fusion": "reciprocal rank, k=60", "pairs_in_top5_before": pairs, "pairs_kept": kept}


def _query_row(q: TextQuery) -> dict[str, Any]:
    return {"text": q.text, "kind": q.kind, "relevant": list(q.relevant)}


def _per_kind(records: Iterable[dict[str, Any]], size: int) -> dict[str, Any]:
    rows = list(records)
    return {
        kind: summarise([r["rank"] for r in rows if r["kind"] == kind], size)
        for kind in KINDS
        if any(r["kind"] == kind for r in rows)
    }


def _near_duplicates(api: Api, images: Sequence[EvalImage]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for name in TRANSFORMS:
        firsts, twins, misses = 0, 0, []
        for image in images:
            data, content_type = near_duplicate(image.data, name)
            hits = api.search_image(
                (f"{image.id}-{name}", data, content_type), limit=NEAR_DUP_LIMIT
            )
            first = hits.ids[0] if hits.ids else None
            if first == image.id:
                firsts += 1
                continue
            twins += int(first is not None and first == image.twin)
            misses.append({"id": image.id, "first": first, "rank": best_rank(hits.ids, {image.id})})
        n = len(images)
        per[name] = {
            "n": n,
            "r1": round(firsts / n, 4) if n else None,
            "r1_or_twin": round((firsts + twins) / n, 4) if n else None,
            "misses": misses,
        }
    total = sum(p["n"] for p in per.values())
    hits_all = sum(p["n"] - len(p["misses"]) for p in per.values())
    return {"per_transform": per, "r1": round(hits_all / total, 4) if total else None}


def _mixed(
    api: Api,
    queries: Sequence[TextQuery],
    before: Sequence[dict[str, Any]],
    captioned: Sequence[CaptionedItem],
    documents: Sequence[Document],
    photo_ids: set[str],
    with_descriptions: bool = False,
) -> dict[str, Any]:
    for item in captioned:  # a second pass replaces the same ids: nothing doubles
        description = item.description if with_descriptions else None
        api.add(item.id, image=item.image.upload, caption=item.caption, description=description)
    # Text-only documents arrive both ways an ingestion source can carry them.
    for n, doc in enumerate(documents):
        if n % 2 == 0:
            api.add(doc.id, description=doc.text)
        else:
            api.add(doc.id, caption=doc.text)
    photos = len(photo_ids)
    size = photos + len(captioned) + len(documents)
    objects = [(q, b) for q, b in zip(queries, before, strict=True) if q.kind == "object"]
    pairs, kept, fell_out, intruders = 0, 0, [], 0
    ranks_before, ranks_after = [], []
    for q, b in objects:
        hits = api.search_text(q.text, mode=None, limit=SEARCH_LIMIT)
        now = hits.ids[:MIXED_TOP]
        intruders += sum(1 for i in now if i not in photo_ids)
        stayed, gone = kept_in_top(q.relevant, b["top5"], hits.ids, MIXED_TOP)
        pairs, kept = pairs + len(stayed) + len(gone), kept + len(stayed)
        fell_out += [
            {
                "query": q.text,
                "photo": photo,
                "rank_after": best_rank(hits.ids, {photo}),
                "above": [i for i in now if i not in q.relevant],
            }
            for photo in gone
        ]
        ranks_before.append(b["rank"])
        ranks_after.append(best_rank(hits.ids, q.relevant))
    return {
        "added_captioned": len(captioned),
        "added_text_only": len(documents),
        "collection_size": size,
        "object_queries": len(objects),
        "before": summarise(ranks_before, photos),
        "after": summarise(ranks_after, size),
        "pairs_in_top5_before": pairs,
        "pairs_kept": kept,
        "fell_out": fell_out,
        "added_items_in_top5": intruders,
    }
