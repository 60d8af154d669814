"""Scores that mean something, in every mode, over the real stack (tiny bundle, ONNX Runtime,
Qdrant Edge, the REST API): ``score_kind`` says the scale, ``score_threshold`` applies to the
score returned on every page and with grouping, ``explain`` shows each hit's channels, and an
uncaptioned photo that is the best image match ranks first in ``auto`` among captioned items and
text-only documents."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.gateway.state import Components
from service.search.fusion import relevance
from service.search.planner import Query, SearchOptions
from tests.service.gateway.conftest import make_settings, running_client

MODES = ("image", "caption", "description", "hybrid", "auto")
WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circle", "square", "triangle", "star", "line", "ring")


def blocks(seed: int, size: int = 48) -> bytes:
    """A picture of four coloured quarters (the tiny image tower sees colour layout)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size, 3), np.uint8)
    half = size // 2
    for y in (0, half):
        for x in (0, half):
            pixels[y : y + half, x : x + half] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def sentences(rng: np.random.Generator) -> Iterator[str]:
    """Texts of distinct words: the tiny text tower averages its tokens, so two texts of the same
    words would tie, and ties may come back in either order."""
    seen: set[tuple[str, ...]] = set()
    while True:
        colour, shape, other = rng.choice(WORDS), rng.choice(SHAPES), rng.choice(WORDS)
        text = f"a {colour} {shape} next to a {other} {rng.choice(SHAPES)}"
        words = tuple(sorted(text.split()))
        if words not in seen and "red circle" not in text:  # those are the test's own
            seen.add(words)
            yield text


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("scores"), tiny_bundle_dir))


@pytest.fixture(scope="module")
def loaded(client: TestClient) -> dict[str, str]:
    """30 captioned pictures, 12 text-only documents, 10 uncaptioned photos; their point ids
    by the id they were added with."""
    texts = sentences(np.random.default_rng(5))
    ids: dict[str, str] = {}

    def add(item_id: str, files: Any = None, **data: str) -> None:
        response = client.post("/v1/items", data={"id": item_id, **data}, files=files)
        assert response.status_code == 200, response.text
        ids[item_id] = response.json()["id"]

    for i in range(30):
        image = {"file": (f"c{i}.png", blocks(i), "image/png")}
        add(f"captioned-{i}", image, caption=next(texts), description=next(texts))
    for i in range(12):
        add(f"doc-{i}", description=next(texts))
    for i in range(10):
        add(f"photo-{i}", {"file": (f"p{i}.png", blocks(100 + i), "image/png")})
    return ids


def search(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_explain_gives_each_hits_channels_and_the_score_follows_from_them(
    client: TestClient, loaded: dict[str, str], mode: str
) -> None:
    components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    body = search(
        client, text="a red circle next to a blue star", mode=mode, limit=20, explain=True
    )
    assert body["hits"]
    one = len(body["channels"]) == 1
    assert body["score_kind"] == ("cosine" if one else "probability")
    for hit in body["hits"]:
        parts = hit["explain"]
        assert parts and {p["channel"] for p in parts} <= set(body["channels"])
        assert set(parts[0]) == {
            "channel",
            "similarity",
            "standardised",
            "relevance",
            "rank",
            "weight",
        }
        payload = {"description_generated": hit["description_generated"]}
        for p in parts:  # each channel's probability, by its evidence kind's curve
            assert p["relevance"] == pytest.approx(
                relevance(p["channel"], payload, p["standardised"]), abs=1e-9
            )
            assert 0.0 <= p["relevance"] <= 1.0
        if one:
            assert hit["score"] == pytest.approx(parts[0]["similarity"], abs=1e-5)
        else:
            weights = [p["weight"] for p in parts]
            score = float(np.dot(weights, [p["relevance"] for p in parts])) / sum(weights)
            assert hit["score"] == pytest.approx(score, abs=1e-6)
            assert 0.0 <= hit["score"] <= 1.0
        null = components.search.null_scales()
        for p in parts:  # each channel on the bundle's null: (cosine - mean) / spread
            scale = null[p["channel"]]
            assert p["standardised"] == pytest.approx(
                (p["similarity"] - scale.mean) / scale.spread, abs=1e-5
            )
        for p in parts:
            assert -1.0 - 1e-6 <= p["similarity"] <= 1.0 + 1e-6
            assert p["rank"] is None or p["rank"] >= 1
    # without explain the field is absent (null), the scores the same
    plain = search(client, text="a red circle next to a blue star", mode=mode, limit=20)
    assert [h["explain"] for h in plain["hits"]] == [None] * len(plain["hits"])
    assert [(h["id"], h["score"]) for h in plain["hits"]] == [
        (h["id"], h["score"]) for h in body["hits"]
    ]


@pytest.mark.parametrize("mode", MODES)
def test_score_threshold_keeps_the_same_hits_on_every_page(
    client: TestClient, loaded: dict[str, str], mode: str
) -> None:
    query = "a green square next to a yellow ring"
    everything = search(client, text=query, mode=mode, limit=100)["hits"]
    scores = sorted((h["score"] for h in everything), reverse=True)
    third = len(scores) // 3
    threshold = (scores[third] + scores[third + 1]) / 2  # keeps about a third, none on the line
    kept = [(h["id"], h["score"]) for h in everything if h["score"] >= threshold]
    assert 0 < len(kept) < len(everything)
    paged = []
    for offset in range(0, len(kept) + 7, 7):
        page = search(
            client, text=query, mode=mode, limit=7, offset=offset, score_threshold=threshold
        )["hits"]
        paged += [(h["id"], h["score"]) for h in page]
    assert [pid for pid, _ in paged] == [pid for pid, _ in kept]
    assert [s for _, s in paged] == pytest.approx([s for _, s in kept], abs=1e-6)
    grouped = search(
        client, text=query, mode=mode, limit=100, score_threshold=threshold, group_by="video"
    )["hits"]
    assert {h["id"] for h in grouped} == {pid for pid, _ in kept}  # no videos here: all stay


@pytest.mark.parametrize(
    ("mode", "threshold", "scale", "valid"),
    [
        ("caption", 1.5, "cosine", "[-1, 1]"),
        ("image", -1.2, "cosine", "[-1, 1]"),
        ("hybrid", 1.5, "probability", "[0, 1]"),
        ("auto", -0.1, "probability", "[0, 1]"),  # a text query in auto fuses
    ],
)
def test_a_threshold_off_the_scale_of_the_search_is_refused_naming_the_range(
    client: TestClient,
    loaded: dict[str, str],
    mode: str,
    threshold: float,
    scale: str,
    valid: str,
) -> None:
    bad = client.post(
        "/v1/search", json={"text": "a red star", "mode": mode, "score_threshold": threshold}
    )
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert error["type"] == "invalid_input"
    assert scale in error["message"] and valid in error["message"], error["message"]
    assert error["detail"]["score_kind"] == ("cosine" if scale == "cosine" else "probability")
    # the search itself is fine: at the bottom of its scale the same query answers in full
    bottom = -1.0 if scale == "cosine" else 0.0
    kept = search(client, text="a red star", mode=mode, limit=20, score_threshold=bottom)
    assert kept["hits"] == search(client, text="a red star", mode=mode, limit=20)["hits"]


def test_the_bounds_of_the_probability_scale_are_thresholds(
    client: TestClient, loaded: dict[str, str]
) -> None:
    everything = search(client, text="a red star", mode="hybrid", limit=100)
    assert everything["score_kind"] == "probability"
    assert all(0.0 <= h["score"] <= 1.0 for h in everything["hits"])
    assert search(client, text="a red star", mode="hybrid", score_threshold=1.0)["hits"] == [
        h for h in everything["hits"] if h["score"] >= 1.0
    ]
    at_zero = search(client, text="a red star", mode="hybrid", limit=100, score_threshold=0.0)
    assert [h["id"] for h in at_zero["hits"]] == [h["id"] for h in everything["hits"]]
    silly = client.post("/v1/search", json={"text": "a red star", "score_threshold": 1e9})
    assert silly.status_code == 422, silly.text


def test_an_uncaptioned_photo_that_is_the_best_image_match_ranks_first_in_auto(
    client: TestClient, loaded: dict[str, str]
) -> None:
    """The photo's picture (a near copy, a few pixels changed) is a query's best image match;
    it has no caption and no description. An image query in auto searches pictures only; a
    "more like this" of a captioned item in auto fuses image, caption and description, and the
    photo, judged on its image alone, still comes first — ahead of captioned items and
    documents that match the item's caption and description as well as any do."""
    components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    target = loaded["photo-3"]
    near = Image.open(io.BytesIO(blocks(103))).convert("RGB")
    near.putpixel((1, 1), (0, 0, 0))
    buf = io.BytesIO()
    near.save(buf, format="PNG")
    by_image = search(
        client, image=base64.b64encode(buf.getvalue()).decode(), limit=5, explain=True
    )
    assert by_image["channels"] == ["image"] and by_image["hits"][0]["id"] == target

    # a captioned item with the photo's picture, and a caption and a description that other
    # captioned items and documents share
    response = client.post(
        "/v1/items",
        data={
            "id": "query-item",
            "caption": "a red circle next to a blue star",
            "description": "a red circle next to a blue star",
            "metadata": json.dumps({"role": "query"}),
        },
        files={"file": ("q.png", blocks(103), "image/png")},
    )
    assert response.status_code == 200, response.text
    docs = []
    for i, text in enumerate(("a red circle next to a blue ring", "a red circle and a blue star")):
        client.post("/v1/items", data={"id": f"echo-{i}", "caption": text, "description": text})
        doc = client.post("/v1/items", data={"id": f"echo-doc-{i}", "description": text})
        docs.append(doc.json()["id"])
    result = components.search.search(
        Query(item_id="query-item"), SearchOptions(mode="auto", limit=10, explain=True)
    )
    assert result.channels == ("image", "caption", "description")
    assert result.score_kind == "probability"
    first = result.hits[0]
    assert first.id == target, [(h.id, h.score) for h in result.hits[:5]]
    assert result.explain is not None
    assert [c.channel for c in result.explain[target]] == ["image"]
    assert result.explain[target][0].rank == 2  # after the item itself (not a hit)
    # below it: the text-only documents that match the item's description as well as any do
    # (each judged on its description alone), every one with a lower score
    ranked = [h.id for h in result.hits]
    assert set(docs) <= set(ranked[1:])
    assert all(h.score < first.score for h in result.hits[1:])
    for doc in docs:
        assert [c.channel for c in result.explain[doc]] == ["description"]


def test_the_multipart_image_search_takes_explain_and_score_threshold(
    client: TestClient, loaded: dict[str, str]
) -> None:
    """``POST /v1/search/image`` (form fields) answers as ``POST /v1/search`` with the same
    image in base64 and the same options: explain per hit, the threshold on the score."""
    picture = blocks(104)
    for mode in ("image", "hybrid"):
        everything = search(
            client, image=base64.b64encode(picture).decode(), mode=mode, limit=50, explain=True
        )["hits"]
        scores = sorted((h["score"] for h in everything), reverse=True)
        threshold = (scores[4] + scores[5]) / 2  # keeps the top five
        as_json = search(
            client,
            image=base64.b64encode(picture).decode(),
            mode=mode,
            limit=50,
            explain=True,
            score_threshold=threshold,
        )
        response = client.post(
            "/v1/search/image",
            files={"file": ("q.png", picture, "image/png")},
            data={
                "mode": mode,
                "limit": "50",
                "explain": "true",
                "score_threshold": str(threshold),
            },
        )
        assert response.status_code == 200, response.text
        multipart = response.json()
        assert len(multipart["hits"]) == 5
        assert [h["id"] for h in multipart["hits"]] == [h["id"] for h in as_json["hits"]]
        assert all(h["score"] >= threshold for h in multipart["hits"])
        for hit in multipart["hits"]:
            assert hit["explain"] and {p["channel"] for p in hit["explain"]} <= set(
                multipart["channels"]
            )
        plain = client.post(
            "/v1/search/image",
            files={"file": ("q.png", picture, "image/png")},
            data={"mode": mode, "limit": "50"},
        ).json()
        assert len(plain["hits"]) == len(everything)
        assert [h["explain"] for h in plain["hits"]] == [None] * len(plain["hits"])


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        ({"mode": "image", "score_threshold": "1.5"}, 400, "cosine"),
        ({"mode": "hybrid", "score_threshold": "1.5"}, 400, "[0, 1]"),
        ({"score_threshold": "1e9"}, 422, "score_threshold"),
        ({"score_threshold": "high"}, 422, "score_threshold"),
        ({"explain": "perhaps"}, 422, "explain"),
    ],
)
def test_bad_multipart_image_search_options(
    client: TestClient, loaded: dict[str, str], data: dict[str, str], status: int, needle: str
) -> None:
    response = client.post(
        "/v1/search/image", files={"file": ("q.png", blocks(1), "image/png")}, data=data
    )
    assert response.status_code == status, response.text
    assert needle in response.text
