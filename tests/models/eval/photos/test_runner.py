"""The runner end to end against a real in-process gateway (the tiny bundle: real ONNX Runtime,
real Qdrant Edge, real lifespan) on generated images, over HTTP only; then the report."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.cli.models_cmd import _photo_gateway
from models.eval.photos.report import MARKDOWN_NAME, targets, write_report
from models.eval.photos.runner import (
    Document,
    EvalImage,
    TextQuery,
    demo_captioned,
    evaluate_photos,
)

# Distinct colours, each the same under a flip and a centre crop: with the tiny bundle's
# colour-layout image tower, every near-duplicate must find its original first.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (230, 220, 40),
    "black": (10, 10, 10),
}
QUERIES = [
    TextQuery("a red square", "colour", ("red",)),
    TextQuery("a blue square", "object", ("blue",)),
    TextQuery("the sky", "scene", ("blue", "green")),
    TextQuery("a photo that is not there", "object", ("ghost",)),
]
DOCUMENTS = [Document("doc-0", "a red square on a kitchen table"), Document("doc-1", "a cat")]


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path
) -> Iterator[TestClient]:
    with _photo_gateway(tiny_bundle_dir, tmp_path_factory.mktemp("photos-gateway")) as client:
        yield client


CAPTIONED_ID = "scene-0000"  # the first demo scene


@pytest.fixture(scope="module")
def result(gateway: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    images = [
        EvalImage(name, _png(rgb), f"{name}.png", source="generated")
        for name, rgb in COLOURS.items()
    ]
    captioned = demo_captioned(tmp_path_factory.mktemp("scenes"), n=3)
    return evaluate_photos(gateway, images, QUERIES, captioned=captioned, documents=DOCUMENTS)


def test_every_query_with_a_photo_in_the_collection_runs(result: dict[str, Any]) -> None:
    assert result["bundle"].startswith("tiny")
    assert result["collection_size"] == len(COLOURS)
    assert (result["queries_given"], result["queries_run"]) == (4, 3)
    default = result["default_mode"]
    assert default["mode"] == "default"
    assert set(default["per_kind"]) == {"colour", "object", "scene"}
    for stats in [*default["per_kind"].values(), default["all"]]:
        assert 0.0 <= stats["r1"] <= stats["r5"] <= 1.0
        assert 1.0 <= stats["mean_rank"] <= len(COLOURS)
    assert [q["text"] for q in default["queries"]] == [q.text for q in QUERIES[:3]]


def test_each_explicit_mode_is_measured(result: dict[str, Any]) -> None:
    assert set(result["modes"]) == {"image", "caption", "description", "hybrid"}
    assert result["modes"]["image"]["channels"] == ["image"]
    # The image channel ranks every photo: each query's relevant photo has a rank.
    ranks = result["mode_ranks"]["image"]
    assert len(ranks) == 3 and all(isinstance(r, int) and 1 <= r <= 5 for r in ranks)
    # No photo has a caption: the caption channel finds none of them.
    assert result["mode_ranks"]["caption"] == [None, None, None]


def test_near_duplicates_find_their_original(result: dict[str, Any]) -> None:
    near = result["near_duplicates"]
    assert set(near["per_transform"]) == {"crop", "flip", "jpeg40"}
    for per in near["per_transform"].values():
        assert per["n"] == len(COLOURS)
        assert per["r1"] == 1.0, per["misses"]
    assert near["r1"] == 1.0


def test_mixed_collection_adds_items_through_the_api(
    result: dict[str, Any], gateway: TestClient
) -> None:
    mixed = result["mixed"]
    assert (mixed["added_captioned"], mixed["added_text_only"]) == (3, 2)
    assert mixed["collection_size"] == len(COLOURS) + 5
    assert mixed["object_queries"] == 1
    assert mixed["pairs_kept"] <= mixed["pairs_in_top5_before"]
    ablation = mixed["rrf_ablation"]
    assert ablation["fusion"] == "reciprocal rank, k=60"
    assert 0 <= ablation["pairs_kept"] <= ablation["pairs_in_top5_before"] >= 1
    # The second pass: the scenes again, now with their descriptions, replacing themselves.
    described = mixed["described"]
    assert described["collection_size"] == mixed["collection_size"]
    assert described["pairs_kept"] <= described["pairs_in_top5_before"]
    assert described["rrf_ablation"]["pairs_in_top5_before"] == ablation["pairs_in_top5_before"]
    # Text-only documents went in both ways a source can carry them; photos without either.
    assert gateway.get("/v1/items/doc-0").json()["description"] == DOCUMENTS[0].text
    assert gateway.get("/v1/items/doc-1").json()["caption"] == DOCUMENTS[1].text
    scene = gateway.get(f"/v1/items/{CAPTIONED_ID}").json()
    assert scene["caption"] and scene["description"] and not scene["description_generated"]
    red = gateway.get("/v1/items/red").json()
    assert red["caption"] is None and red["kind"] == "image"


def test_report_shows_the_bundle_beside_each_baseline(
    result: dict[str, Any], tmp_path: Path
) -> None:
    json_path, md_path = write_report({"tiny": result, "again": result}, "tiny", tmp_path)
    assert md_path.name == MARKDOWN_NAME
    text = md_path.read_text()
    for needle in ("## Targets", "R@1 tiny", "R@1 again", "horizontal flip", "JPEG quality 40"):
        assert needle in text
    for kind in ("colour", "object", "scene"):
        assert f"| {kind} |" in text
    assert "What this cannot claim" in text and "ImageNet" in text
    payload = json.loads(json_path.read_text())
    assert payload["primary"] == "tiny"
    near = next(t for t in payload["results"]["tiny"]["targets"] if t["id"] == "near_dup_r1")
    assert near["passed"] is True
    assert [t["id"] for t in targets(result)] == ["object_r1", "near_dup_r1", "mixed_kept"]
