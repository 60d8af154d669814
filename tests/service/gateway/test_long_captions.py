"""Long captions through the real gateway: accepted up to limits.max_caption_chars and found by
a sentence at their very end (mode=caption is MaxSim over the chunks); longer ones get a 400."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.gateway.state import Components
from tests.service.items.test_points import PARAGRAPHS
from tests.service.search.test_long_captions import OTHERS, QUERY


def test_a_long_caption_is_stored_whole_and_found_by_its_last_sentence(
    client: TestClient, components: Components
) -> None:
    filler = " ".join(["A white dot is next to a grey line."] * 120)  # ~4,300 characters
    caption = f"{filler}\n\n{PARAGRAPHS}"
    assert len(caption) < 10_000
    posted = client.post("/v1/items", data={"caption": caption, "id": "long-caption"})
    assert posted.status_code == 200, posted.text
    for i, text in enumerate(OTHERS):
        assert client.post("/v1/items", data={"caption": text, "id": f"o{i}"}).status_code == 200

    [record] = components.store.retrieve(
        components.collection, [posted.json()["id"]], with_vectors=True
    )
    assert len(record.vectors["caption"]) > 10  # one row per chunk
    assert client.get("/v1/items/long-caption").json()["caption"] == caption  # not a chunk

    found = client.post("/v1/search", json={"text": QUERY, "mode": "caption", "limit": 3})
    assert found.status_code == 200, found.text
    assert found.json()["hits"][0]["id"] == posted.json()["id"]
    assert found.json()["channels"] == ["caption"]


def test_a_caption_over_the_documented_limit_is_refused(client: TestClient) -> None:
    response = client.post("/v1/items", data={"caption": "word " * 2001})  # 10,005 characters
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert "the limit is 10000 (limits.max_caption_chars)" in error["message"]
