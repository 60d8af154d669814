"""The mixed-kind search evaluation of one served bundle, through the public HTTP API only.

:func:`evaluate_search` takes a client of a running gateway with an empty collection, adds the
test set's items (``POST /v1/items``; the videos by ``POST /v1/ingest`` of a manifest naming
their files, then ``GET /v1/jobs/{id}`` until done), runs every query in every mode and returns a
JSON-ready dict of each query's rank per mode and the R@1/R@10 summaries per split, mode and item
kind. A hit is named by the key the test set gives its item (a segment by its video and start).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.eval.photos.api import Api, ApiError, HttpClient
from models.eval.photos.metrics import best_rank
from models.eval.search.testset import ITEM_KINDS, SPLITS, EvalSet, SearchQuery, segment_key
from models.eval.search.video import SHOT_S, make_video

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("image", "caption", "description", "hybrid", "auto")
SINGLE_MODES: tuple[str, ...] = ("image", "caption", "description")
LIMIT = 10
RECALL_AT: tuple[int, ...] = (1, 10)
JOB_TIMEOUT_S = 600.0
JOB_POLL_S = 0.5


def evaluate_search(
    client: HttpClient,
    testset: EvalSet,
    video_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``video_dir``: where the videos are written; the gateway must allow reading it."""
    say = progress or logger.info
    api = Api(client)
    ready = api.wait_ready()
    started = time.perf_counter()
    say(
        f"search eval: adding {len(testset.photos)} photos (no text), {len(testset.captioned)} "
        f"captioned scenes, {len(testset.documents)} documents"
    )
    for image in testset.photos:
        api.add(image.id, image=image.upload)
    for item in testset.captioned:
        api.add(
            item.id, image=item.image.upload, caption=item.caption, description=item.description
        )
    for n, doc in enumerate(testset.documents):
        if n % 2 == 0:
            api.add(doc.id, description=doc.text)
        else:
            api.add(doc.id, caption=doc.text)
    say(f"search eval: ingesting {len(testset.videos)} videos")
    _ingest_videos(client, testset, video_dir)
    kinds = testset.kinds()
    say(f"search eval: {len(testset.queries)} queries x {len(MODES)} modes")
    rows = []
    channels: dict[str, list[str]] = {}
    for q in testset.queries:
        ranks: dict[str, int | None] = {}
        top: list[dict[str, str]] = []
        for mode in MODES:
            hits = api.search_text(q.text, mode=mode, limit=LIMIT)
            keys = [_key(pid, hit) for pid, hit in zip(hits.ids, hits.hits, strict=True)]
            ranks[mode] = best_rank(keys, set(q.relevant))
            channels.setdefault(mode, hits.channels)
            if mode == "auto":
                top = [{"key": k, "kind": kinds.get(k, "?")} for k in keys[:3]]
        rows.append({**_query_json(q), "ranks": ranks, "auto_top3": top})
    return {
        "model": ready.get("model") or ready.get("bundle"),
        "collection": {kind: sum(1 for k in kinds.values() if k == kind) for kind in ITEM_KINDS},
        "channels": channels,
        "limit": LIMIT,
        "queries": rows,
        "summary": {split: summarise(rows, split) for split in SPLITS},
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarise(rows: Sequence[dict[str, Any]], split: str) -> dict[str, Any]:
    """Per mode: per item kind and overall, ``{"n", "r1", "r10"}``. ``overall`` is the mean of
    the kinds (each kind weighs the same, however many queries it has); ``all`` pools queries."""
    mine = [r for r in rows if r["split"] == split]
    out: dict[str, Any] = {}
    for mode in MODES:
        per_kind = {
            kind: _recalls([r["ranks"][mode] for r in mine if r["kind"] == kind])
            for kind in ITEM_KINDS
        }
        present = [v for v in per_kind.values() if v["n"]]
        overall = {
            f"r{k}": round(sum(v[f"r{k}"] for v in present) / len(present), 4) if present else None
            for k in RECALL_AT
        }
        out[mode] = {
            **per_kind,
            "overall": {"n": sum(v["n"] for v in present), **overall},
            "all": _recalls([r["ranks"][mode] for r in mine]),
        }
    return out


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets on one split's summary: ``auto`` within 0.05 of the best single
    mode for every item kind, and above each single mode overall (R@1 and R@10 each)."""
    checks: dict[str, Any] = {"per_kind": {}, "overall": {}}
    for kind in ITEM_KINDS:
        if not summary["auto"][kind]["n"]:
            continue
        for k in RECALL_AT:
            best_mode = max(SINGLE_MODES, key=lambda m: summary[m][kind][f"r{k}"])
            best = summary[best_mode][kind][f"r{k}"]
            auto = summary["auto"][kind][f"r{k}"]
            checks["per_kind"][f"{kind} R@{k}"] = {
                "auto": auto,
                "best_single": best,
                "best_mode": best_mode,
                "met": auto >= best - 0.05,
            }
    for k in RECALL_AT:
        auto = summary["auto"]["overall"][f"r{k}"]
        singles = {m: summary[m]["overall"][f"r{k}"] for m in SINGLE_MODES}
        checks["overall"][f"R@{k}"] = {
            "auto": auto,
            "singles": singles,
            "met": all(auto > v for v in singles.values()),
        }
    checks["met"] = all(
        c["met"] for group in ("per_kind", "overall") for c in checks[group].values()
    )
    return checks


def _recalls(ranks: Sequence[int | None]) -> dict[str, Any]:
    n = len(ranks)
    out: dict[str, Any] = {"n": n}
    for k in RECALL_AT:
        found = sum(1 for r in ranks if r is not None and r <= k)
        out[f"r{k}"] = round(found / n, 4) if n else None
    return out


def _key(added_as: str, hit: dict[str, Any]) -> str:
    """The test set's key of a hit: a video segment by its video and start, else its item id."""
    if hit.get("video_id") is not None and hit.get("t_start") is not None:
        return segment_key(str(hit["video_id"]), round(float(hit["t_start"]) / SHOT_S))
    return added_as


def _query_json(q: SearchQuery) -> dict[str, Any]:
    return {"text": q.text, "kind": q.kind, "relevant": list(q.relevant), "split": q.split}


def _ingest_videos(client: HttpClient, testset: EvalSet, video_dir: Path) -> None:
    video_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for video, shots in testset.videos.items():
        path = make_video(video_dir / f"{video}.mp4", [s.data for s in shots])
        lines.append({"uri": str(path.resolve()), "id": video})
    if not lines:
        return
    response = client.post("/v1/ingest", json={"source": {"manifest_lines": lines}})
    if response.status_code >= 400:
        raise ApiError(f"ingest videos: HTTP {response.status_code}: {response.text}")
    job = str(response.json()["job_id"])
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        status = client.get(f"/v1/jobs/{job}")
        body = status.json() if status.status_code == 200 else {}
        state = body.get("state")
        if state == "completed" and not body.get("failed"):
            return
        if state in ("completed", "failed", "cancelled", "interrupted"):
            raise ApiError(f"video ingest job {job} ended {state}: {body.get('errors')}")
        if time.monotonic() > deadline:
            raise ApiError(f"video ingest job {job} not done in {JOB_TIMEOUT_S:.0f} s: {body}")
        time.sleep(JOB_POLL_S)  # jobs have no push channel: polling is the API
