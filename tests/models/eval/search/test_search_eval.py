"""The mixed-kind search eval: its test set, its figures, and the runner end to end against a
real in-process gateway (the tiny bundle, real ONNX Runtime, real Qdrant Edge, a real video
ingest job) over HTTP only."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.cli.models_cmd import _search_gateway
from models.eval.photos.runner import Document, EvalImage, demo_captioned, load_queries
from models.eval.search.report import render
from models.eval.search.runner import MODES, evaluate_search, summarise, targets
from models.eval.search.testset import (
    EvalSet,
    SearchQuery,
    build_testset,
    scene_queries,
    split_of,
)


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (96, 72)) -> bytes:
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (10, 10, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _image(name: str, colour: tuple[int, int, int]) -> EvalImage:
    return EvalImage(name, _png(colour), f"{name}.png")


def test_the_test_set_sends_held_out_photos_into_videos(tmp_path: Path) -> None:
    ids = ["chelsea", "coffee", "astronaut", "rocket", "squirrel", "moon", "hubble-deep-field"]
    images = [_image(i, (20 * n, 40, 200 - 20 * n)) for n, i in enumerate(ids)]
    testset = build_testset(images, tmp_path / "scenes", scenes=6)
    assert [p.id for p in testset.photos] == ["chelsea", "coffee", "astronaut", "hubble-deep-field"]
    assert list(testset.videos) == ["clip-a"]  # clip-b's photos are not in this corpus
    assert [s.id for s in testset.videos["clip-a"]] == ["rocket", "squirrel", "moon"]
    by_text = {q.text: q for q in testset.queries}
    assert by_text["a rocket"].kind == "video" and by_text["a rocket"].relevant == ("clip-a#0",)
    assert by_text["the moon"].relevant == ("clip-a#2",)  # coins (clip-a's third) is missing
    assert by_text["a cat"].kind == "photo" and by_text["a cat"].relevant == ("chelsea",)
    assert "outer space" not in by_text  # hubble-deep-field (a photo) and moon (a video)
    assert "a horse" not in by_text  # no relevant photo in this corpus
    kinds = testset.kinds()
    assert kinds["clip-a#1"] == "video" and kinds["scene-0005"] == "captioned"
    assert kinds["doc-31"] == "document"
    docs = [q for q in testset.queries if q.kind == "document"]
    assert len(docs) == 32 and {r for q in docs for r in q.relevant} == set(kinds) & {
        f"doc-{n:02d}" for n in range(32)
    }
    assert {q.split for q in testset.queries} == {"dev", "test"}


def test_splits_are_stable_and_keep_the_photo_bundles_tuned_texts_out_of_the_report() -> None:
    assert split_of("a cat") == split_of("a cat")
    assert split_of("a dog") == "dev"  # in models/photo/dev/queries.tsv: never reported
    texts = [q.text for q in load_queries()] + [q.text for q in scene_queries()]
    share = sum(split_of(t) == "dev" for t in texts) / len(texts)
    assert 0.25 < share < 0.6


def test_scene_queries_paraphrase_and_know_their_twins() -> None:
    queries = scene_queries(12)
    assert len(queries) == 12 and all(q.kind == "captioned" for q in queries)
    assert all(f"scene-{n:04d}" in q.relevant for n, q in enumerate(queries))


def _row(kind: str, split: str, **ranks: int | None) -> dict[str, Any]:
    return {"kind": kind, "split": split, "ranks": {m: ranks.get(m) for m in MODES}}


def test_summary_and_targets_follow_the_definitions() -> None:
    rows = [
        _row("photo", "test", image=1, description=3, hybrid=1, auto=2),
        _row("photo", "test", image=12, description=1, hybrid=4, auto=4),
        _row("document", "test", caption=1, description=None, hybrid=1, auto=1),
        _row("document", "dev", caption=1, auto=None),
    ]
    summary = summarise(rows, "test")
    assert summary["auto"]["photo"] == {"n": 2, "r1": 0.0, "r10": 1.0}
    assert summary["image"]["photo"] == {"n": 2, "r1": 0.5, "r10": 0.5}
    assert summary["auto"]["document"] == {"n": 1, "r1": 1.0, "r10": 1.0}
    assert summary["auto"]["video"] == {"n": 0, "r1": None, "r10": None}
    assert summary["auto"]["overall"] == {"n": 3, "r1": 0.5, "r10": 1.0}  # mean of two kinds
    assert summary["auto"]["all"] == {"n": 3, "r1": 0.3333, "r10": 1.0}  # pooled
    check = targets(summary)
    assert check["per_kind"]["photo R@1"] == {
        "auto": 0.0,
        "best_single": 0.5,
        "best_mode": "image",
        "met": False,
    }
    assert check["per_kind"]["photo R@10"]["met"] and "video R@1" not in check["per_kind"]
    assert check["overall"]["R@10"]["met"] and not check["met"]


@pytest.fixture(scope="module")
def evaluated(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path
) -> Iterator[tuple[dict[str, Any], EvalSet, TestClient]]:
    root = tmp_path_factory.mktemp("search-eval")
    photos = [_image("red", (220, 30, 30)), _image("blue", (30, 60, 220))]
    shots = [_image("yellow", (230, 220, 40)), _image("green", (30, 170, 60))]
    documents = [
        Document("doc-a", "minutes of the garden committee meeting"),
        Document("doc-b", "a recipe for tomato soup with basil"),
    ]
    queries = [
        SearchQuery("minutes of the garden committee meeting", "document", ("doc-a",), "test"),
        SearchQuery("a recipe for tomato soup with basil", "document", ("doc-b",), "test"),
        SearchQuery("any picture", "video", ("clip#0", "clip#1"), "test"),
        SearchQuery("a red thing", "photo", ("red",), "dev"),
    ]
    captioned = demo_captioned(root / "scenes", 3)
    queries.append(SearchQuery(captioned[0].caption, "captioned", (captioned[0].id,), "test"))
    testset = EvalSet(photos, captioned, documents, {"clip": shots}, queries)
    videos = root / "videos"
    videos.mkdir()
    with _search_gateway(tiny_bundle_dir, root / "gateway", videos) as client:
        yield evaluate_search(client, testset, videos), testset, client


def test_the_runner_measures_every_mode_through_the_api(
    evaluated: tuple[dict[str, Any], EvalSet, TestClient],
) -> None:
    result, testset, client = evaluated
    assert result["collection"] == {"photo": 2, "captioned": 3, "document": 2, "video": 2}
    rows = {q["text"]: q["ranks"] for q in result["queries"]}
    # a document's own words find it first where its text is: doc-a went in as a description,
    # doc-b as a caption (the runner alternates), and in auto, which fuses both
    assert rows["minutes of the garden committee meeting"]["description"] == 1
    assert rows["minutes of the garden committee meeting"]["caption"] is None
    assert rows["a recipe for tomato soup with basil"]["caption"] == 1
    assert rows["a recipe for tomato soup with basil"]["auto"] == 1
    assert rows[testset.captioned[0].caption]["caption"] == 1
    # segments are named by video and shot: the rank is where the API put the first segment
    body = client.post("/v1/search", json={"text": "any picture", "mode": "image", "limit": 10})
    hits = body.json()["hits"]
    first = next(n for n, h in enumerate(hits, start=1) if h.get("video_id") == "clip")
    assert rows["any picture"]["image"] == first
    assert {round(h["t_start"]) for h in hits if h.get("video_id") == "clip"} == {0, 5}
    assert result["summary"]["test"]["auto"]["document"]["n"] == 2
    assert result["summary"]["dev"]["auto"]["photo"]["n"] == 1
    json.dumps(result)  # the report's JSON


def test_the_report_shows_every_mode_and_the_targets(
    evaluated: tuple[dict[str, Any], EvalSet, TestClient],
) -> None:
    result = evaluated[0]
    text = render(result, "tiny", "make eval-search")
    for mode in MODES:
        assert f"| {mode} |" in text or f"| **{mode}** |" in text
    assert "text-only documents (n=2)" in text and "video segments (n=1)" in text
    assert "overall R@1:" in text and "make eval-search" in text
