"""The mixed-kind test set: which items go into the collection, and the queries, each with the
item kind its right answers are of and the split it belongs to.

Items (keys as the runner names hits):

* ``photo``: the real eval photos (``models/eval/photos``), added with no caption and no
  description — an uncaptioned photo library. Key: the photo id.
* ``captioned``: the 60 demo scenes as ``make run`` serves them, picture, caption and
  description. Key: the scene id.
* ``document``: ``models/eval/photos/documents.jsonl``, text only, half sent as ``description``
  and half as ``caption`` (an ingestion source may carry either). Key: the document id.
* ``video``: two videos made here (``video.py``) from 8 eval photos held out of the photo set,
  one 5 s shot each; a segment is found by its video and start. Key: ``<video>#<shot>``.

Queries: the photo eval's queries (every kind) whose relevant photos are all image-only photos
(→ ``photo``) or all held out into a video (→ ``video``, relevant: those segments); a query
mixing both is left out. For each scene a paraphrase of its caption (another phrasing the scene
generator wrote: a relation between two of its objects, or its objects and background), relevant:
every scene of the same coloured shapes. For each document a query written from its meaning, not
its words (``doc_queries.jsonl``).

Splits: a third of the queries (by a hash of the text) are ``dev``: fusion may be tuned on them
and they are never reported; the report is the ``test`` split. So are the texts the photo bundle's
settings were chosen on (``models/photo/dev/queries.tsv``, on other photos), whatever their hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from models.eval.photos.cli import dev_query_texts
from models.eval.photos.runner import (
    CaptionedItem,
    Document,
    EvalImage,
    demo_captioned,
    load_documents,
    load_queries,
)

HERE = Path(__file__).parent
DOC_QUERIES_PATH = HERE / "doc_queries.jsonl"
ITEM_KINDS: tuple[str, ...] = ("photo", "captioned", "document", "video")
# Photos held out of the photo set into videos: distinct things with queries of their own.
VIDEOS: dict[str, tuple[str, ...]] = {
    "clip-a": ("rocket", "squirrel", "coins", "moon"),
    "clip-b": ("board", "smarties", "brick", "gravel"),
}
SCENES = 60
SPLITS: tuple[str, ...] = ("dev", "test")


@dataclass(frozen=True)
class SearchQuery:
    text: str
    kind: str  # the item kind of its right answers (ITEM_KINDS)
    relevant: tuple[str, ...]  # item keys
    split: str


@dataclass(frozen=True)
class EvalSet:
    photos: list[EvalImage]  # image only
    captioned: list[CaptionedItem]
    documents: list[Document]
    videos: dict[str, list[EvalImage]]  # video id -> its shots, in order
    queries: list[SearchQuery]

    def kinds(self) -> dict[str, str]:
        """Every item key -> its kind."""
        out = {p.id: "photo" for p in self.photos}
        out |= {c.id: "captioned" for c in self.captioned}
        out |= {d.id: "document" for d in self.documents}
        for video, shots in self.videos.items():
            out |= {segment_key(video, n): "video" for n in range(len(shots))}
        return out


@cache
def _tuned_texts() -> frozenset[str]:
    return dev_query_texts()


def segment_key(video: str, shot: int) -> str:
    return f"{video}#{shot}"


def split_of(text: str) -> str:
    if text in _tuned_texts():
        return "dev"
    return "dev" if hashlib.sha256(text.encode()).digest()[0] % 3 == 0 else "test"


def build_testset(images: Sequence[EvalImage], scenes_dir: Path, scenes: int = SCENES) -> EvalSet:
    """The test set over the assembled eval photos; writes the demo scenes into ``scenes_dir``."""
    by_id = {image.id: image for image in images}
    videos = {v: [by_id[i] for i in shots if i in by_id] for v, shots in VIDEOS.items()}
    videos = {v: shots for v, shots in videos.items() if shots}
    segment = {s.id: segment_key(v, n) for v, shots in videos.items() for n, s in enumerate(shots)}
    photos = [image for image in images if image.id not in segment]
    queries: list[SearchQuery] = []
    for q in load_queries():
        relevant = [r for r in q.relevant if r in by_id]
        if relevant and all(r in segment for r in relevant):
            keys = tuple(segment[r] for r in relevant)
            queries.append(SearchQuery(q.text, "video", keys, split_of(q.text)))
        elif relevant and not any(r in segment for r in relevant):
            queries.append(SearchQuery(q.text, "photo", tuple(relevant), split_of(q.text)))
    captioned = demo_captioned(scenes_dir, scenes)
    queries += scene_queries(scenes)
    documents = load_documents()
    known = {d.id for d in documents}
    for n, line in enumerate(DOC_QUERIES_PATH.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not row.get("text") or not row.get("relevant") or set(row["relevant"]) - known:
            raise ValueError(f"{DOC_QUERIES_PATH}:{n}: needs text and known relevant documents")
        queries.append(
            SearchQuery(row["text"], "document", tuple(row["relevant"]), split_of(row["text"]))
        )
    return EvalSet(photos, captioned, documents, videos, queries)


def scene_queries(n: int = SCENES) -> list[SearchQuery]:
    """A paraphrase of each demo scene's caption: a relation between two of its objects (several
    objects), or its one object and the background; relevant: the scenes of the same coloured
    shapes (any relation)."""
    from models.data.scenes import generate_scenes

    scenes = generate_scenes(n, 1234)  # write_demo_dataset's seed: the same scenes
    signature = {s.id: tuple(sorted((o.colour, o.shape) for o in s.objects)) for s in scenes}
    out = []
    for scene in scenes:
        if len(scene.objects) > 1:
            text = scene.captions["compositional"][1]
        else:
            text = scene.captions["short"][2]
        relevant = tuple(i for i, sig in signature.items() if sig == signature[scene.id])
        out.append(SearchQuery(text, "captioned", relevant, split_of(text)))
    return out
