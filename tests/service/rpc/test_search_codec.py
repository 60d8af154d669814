"""clipsearch.v1 messages and the REST models: every field survives the trip both ways."""

from __future__ import annotations

import pytest

from service.core.errors import ClipsearchError, ErrorType
from service.core.schemas.api import Hit, JobStatus, SearchRequest, SearchResponse
from service.rpc import search_codec as codec
from service.rpc.proto import search_pb2 as pb


def test_a_hit_with_every_field_survives_the_trip() -> None:
    hit = Hit.model_validate(
        {
            "id": "p1",
            "score": 0.123456789012345,
            "kind": "video_segment",
            "uri": "file:///a b/c.mkv",
            "caption": "a clip",
            "description": None,
            "description_generated": True,
            "labels": [{"name": "cat", "score": 0.5}],
            "tags": ["x", "y"],
            "metadata": {"n": 1, "f": 1.0, "s": "é", "nested": {"l": [1, None, True]}},
            "video_id": "v",
            "t_start": 0.0,
            "t_end": 3.5,
            "thumbnail": "/v1/media/t.jpg",
            "explain": [
                {
                    "channel": "image",
                    "similarity": 0.3,
                    "standardised": 1.2,
                    "relevance": 0.0123456789,
                    "rank": 1,
                    "weight": 1,
                },
                {
                    "channel": "caption",
                    "similarity": 0.1,
                    "standardised": -0.2,
                    "relevance": 0.0,
                    "rank": None,
                    "weight": 0.5,
                },
            ],
        }
    )
    wire = pb.Hit.FromString(codec.hit_to_proto(hit).SerializeToString())
    assert codec.hit_from_proto(wire) == hit
    assert [c.relevance for c in wire.explain] == [0.0123456789, 0.0]
    bare = Hit(id="p2", score=1.0)
    back = codec.hit_from_proto(codec.hit_to_proto(bare))
    assert back == bare and back.kind is None and back.explain is None


def test_a_search_request_becomes_the_rest_body() -> None:
    message = codec.search_request_to_proto(
        image=b"\x89PNG",
        mode="hybrid",
        limit=7,
        offset=3,
        filter={"kind": ["image", "text"], "tags": "a", "media_id": ["m"]},
        score_threshold=0.25,
        group_by="video",
        explain=True,
    )
    body = codec.search_body_from_proto(pb.SearchRequest.FromString(message.SerializeToString()))
    parsed = SearchRequest.model_validate(body)
    assert parsed.image_bytes() == b"\x89PNG"
    assert (parsed.mode, parsed.limit, parsed.offset, parsed.score_threshold) == (
        "hybrid",
        7,
        3,
        0.25,
    )
    assert (parsed.group_by, parsed.explain) == ("video", True)
    assert parsed.filter is not None
    assert parsed.filter.as_filter() == {"kind": ["image", "text"], "tags": "a", "media_id": ["m"]}
    # Unset fields take REST's defaults, not proto3's zeros.
    defaults = SearchRequest.model_validate(
        codec.search_body_from_proto(codec.search_request_to_proto(item_id="x"))
    )
    assert (defaults.mode, defaults.limit, defaults.item_id) == ("auto", 10, "x")


@pytest.mark.parametrize("value", ["a", 3, True, False, ["a", "b"], [1, 2], 0])
def test_filter_values_keep_their_type(value: object) -> None:
    message = codec.filter_value_to_proto("k", value)  # type: ignore[arg-type]
    back = codec.filter_value_from_proto("k", message)
    assert back == value and type(back) is type(value)


def test_a_mixed_list_is_not_a_filter_value() -> None:
    with pytest.raises(ClipsearchError) as err:
        codec.filter_value_to_proto("k", ["a", 1])  # type: ignore[list-item]
    assert err.value.type is ErrorType.invalid_input


def test_responses_and_jobs_survive_the_trip() -> None:
    response = SearchResponse(
        hits=[Hit(id="a", score=0.5)],
        took_ms=1.5,
        model="m@1",
        mode="auto",
        channels=["caption", "description"],
        score_kind="probability",
    )
    assert codec.search_response_from_proto(codec.search_response_to_proto(response)) == response
    job = JobStatus.model_validate(
        {
            "id": "j",
            "kind": "ingest",
            "state": "failed",
            "total": 3,
            "done": 1,
            "failed": 2,
            "skipped": 1,
            "attempt": 2,
            "rate_per_s": 0.5,
            "eta_s": None,
            "waiting_for_writer": True,
            "errors": [{"item": "x", "reason": "bad"}],
            "error": "boom",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:01Z",
        }
    )
    assert codec.job_from_proto(codec.job_to_proto(job)) == job


def test_ingest_sources_become_the_rest_body() -> None:
    for source in (
        "/data/photos",
        {"manifest": "/data/m.jsonl"},
        {"urls": ["https://example.com/a.jpg"]},
    ):
        body = codec.ingest_body_from_proto(codec.ingest_request_to_proto(source))
        assert body["source"] == ({"directory": source} if isinstance(source, str) else source)
    lines = codec.ingest_body_from_proto(
        codec.ingest_request_to_proto({"manifest_lines": [{"id": "a"}, '{"id": "b"}']}, "media")
    )
    assert lines == {
        "source": {"manifest_lines": ['{"id": "a"}', '{"id": "b"}']},
        "collection": "media",
    }
    with pytest.raises(ClipsearchError):
        codec.ingest_request_to_proto({"directory": "/a", "urls": ["x"]})


def test_page_tokens_are_opaque_and_checked() -> None:
    assert codec.page_offset("") == 0
    assert codec.page_offset(codec.page_token(40)) == 40
    for bad in ("40", "!!!", codec.page_token(-1), "eyJvZmZzZXQiOiAieCJ9"):
        with pytest.raises(ClipsearchError) as err:
            codec.page_offset(bad)
        assert err.value.type is ErrorType.invalid_input
