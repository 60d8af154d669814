"""group_by=video: the best segment per video, other hits untouched, rank order kept."""

from __future__ import annotations

from service.core.domain import StoredHit
from service.search.planner import best_per_video


def hit(pid: str, score: float, video: str | None = None) -> StoredHit:
    payload = {"video_id": video} if video else {}
    return StoredHit(id=pid, score=score, payload=payload)


def test_best_segment_per_video_in_rank_order() -> None:
    ranked = [
        hit("a1", 0.9, "a"),
        hit("img", 0.8),
        hit("a2", 0.7, "a"),
        hit("b1", 0.6, "b"),
        hit("txt", 0.5),
        hit("b2", 0.4, "b"),
    ]
    assert [h.id for h in best_per_video(ranked)] == ["a1", "img", "b1", "txt"]
    assert best_per_video([]) == []
