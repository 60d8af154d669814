"""A collection keeps every write and delete, whichever version serves (issue 19, item 4).

A stateful property test over the public REST API of a real gateway (tiny bundle, ONNX Runtime,
Qdrant Edge, in-process jobs): hypothesis drives adds, deletes, video ingests, single-segment and
whole-video deletes, reindexes and rollouts onto tiny-narrow (held mid-build), promotes,
rollbacks, roll-forwards and cancels, and after every step the items a user sees are exactly
those the model says were written and not deleted since — by id (GET every id ever written) and
by search (no hit the model does not hold)."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from service.core.config import Settings
from service.gateway.app import create_app
from tests.indexer.pipeline.test_video import make_video
from tests.indexer.test_reindex import wait_rollout
from tests.service.gateway.conftest import make_settings, png
from tests.support import wait_for_job

SEGMENTS = 3  # the test video is 12 s, cut into fixed 5 s segments (the default)
COLOURS = [(220, 30, 30), (30, 180, 60), (30, 60, 220), (200, 200, 40)]
WORDS = ["red", "green", "blue", "yellow"]
MAX_EXAMPLES = 25
RULES = {
    "add_image",
    "add_file",
    "add_doc",
    "ingest_video",
    "delete_item",
    "delete_video",
    "start_reindex",
    "start_rollout",
    "finish_build",
    "promote",
    "cancel_build",
    "rollback",
}
STEPS = 20


class Gate:
    """Wraps the reindexer's embedder: while closed, its bulk-lane calls (the rebuild's) wait,
    so a build is held mid-run for as many steps as the machine likes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = threading.Event()
        self.open.set()

    def embed_texts(self, texts: Sequence[str], *, lane: Any = "interactive", **kw: Any) -> Any:
        if lane == "bulk":
            self.open.wait(120)
        return self.inner.embed_texts(texts, lane=lane, **kw)

    def encode_images(self, images: Sequence[Any], *, lane: Any = "interactive", **kw: Any) -> Any:
        if lane == "bulk":
            self.open.wait(120)
        return self.inner.encode_images(images, lane=lane, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _path(item_id: str) -> str:
    return quote(item_id, safe="")


class Lifecycle(RuleBasedStateMachine):
    """The model: ``live`` (media ids a user should see) and ``known`` (every id ever
    written); the build under way, if any; whether a previous version is there to roll to."""

    workdir: Path
    bundle_dir: Path
    narrow: Path
    video: bytes
    runs = 0
    calls: Counter[str] = Counter()

    def __init__(self) -> None:
        super().__init__()
        Lifecycle.runs += 1
        root = self.workdir / f"run{Lifecycle.runs}"
        root.mkdir()
        self.root = root
        self.settings: Settings = make_settings(root, self.bundle_dir)
        self.app = create_app(self.settings, _build)
        self.client = TestClient(self.app)
        self.client.__enter__()
        assert self.app.state.runtime.wait(120), self.app.state.runtime.readiness()
        reindexer = self.app.state.runtime.components.reindexer
        self.gate = Gate(reindexer._embedder)
        reindexer._embedder = self.gate
        self.live: set[str] = set()
        self.known: set[str] = set()
        self.points: dict[str, str] = {}  # media id -> point id, learned when written
        self.videos: dict[str, list[str]] = {}  # video id -> its segments' media ids
        self.build: dict[str, Any] | None = None  # {"id", "state"}
        self.serving = "tiny"  # the bundle of the version searched now
        self.previous: str | None = None  # that of the version a rollback would serve
        self.serial = 0

    def teardown(self) -> None:
        self.gate.open.set()
        self.client.__exit__(None, None, None)
        shutil.rmtree(self.root, ignore_errors=True)

    def _next(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def _ok(self, response: Any, *codes: int) -> Any:
        assert response.status_code in (codes or (200,)), (response.status_code, response.text)
        return response.json() if response.content else None

    # -- writes ------------------------------------------------------------------------------
    @rule(kind=st.sampled_from(["image", "doc", "file"]), colour=st.integers(0, len(COLOURS) - 1))
    def add_item(self, kind: str, colour: int) -> None:
        """An image with a caption (posted, or ingested from a file beside its caption), or a
        text-only document."""
        self.calls[f"add_{kind}"] += 1
        if kind == "file":
            folder = self.root / "src" / self._next("photo")
            folder.mkdir(parents=True)
            (folder / "p.png").write_bytes(png(COLOURS[colour]))
            (folder / "p.txt").write_text(f"a {WORDS[colour]} square")
            self._ingest(folder)
            media_id = (folder / "p.png").resolve().as_uri()
            body = self._ok(self.client.get(f"/v1/items/{_path(media_id)}"))
        else:
            media_id = self._next("img" if kind == "image" else "doc")
            if kind == "image":
                files = {"file": ("x.png", png(COLOURS[colour]), "image/png")}
                data = {"caption": f"a {WORDS[colour]} square", "id": media_id}
            else:
                files, data = (
                    None,
                    {"description": f"a note on {WORDS[colour]} boats", "id": media_id},
                )
            body = self._ok(self.client.post("/v1/items", files=files, data=data))
        self.live.add(media_id)
        self.known.add(media_id)
        self.points[media_id] = body["id"]

    def _ingest(self, folder: Path) -> None:
        job = self._ok(self.client.post("/v1/ingest", json={"source": str(folder)}), 202)
        done = wait_for_job(lambda j: self.client.get(f"/v1/jobs/{j}").json(), job["job_id"])
        assert done["state"] == "completed" and not done.get("errors"), done

    @precondition(lambda self: len(self.videos) < 2)
    @rule(drop=st.none() | st.integers(0, SEGMENTS - 1))
    def ingest_video(self, drop: int | None) -> None:
        """A short video, cut into segments; ``drop``: one of them deleted right away."""
        self.calls["ingest_video"] += 1
        folder = self.root / "src" / self._next("video")
        folder.mkdir(parents=True)
        (folder / "clip.mp4").write_bytes(self.video)
        self._ingest(folder)
        video_id = (folder / "clip.mp4").resolve().as_uri()
        segments = [f"{video_id}#{i}" for i in range(SEGMENTS)]
        self.videos[video_id] = segments
        self.live |= set(segments)
        self.known |= set(segments)
        for media_id in segments:
            self.points[media_id] = self._ok(self.client.get(f"/v1/items/{_path(media_id)}"))["id"]
        if drop is not None:
            self._ok(self.client.delete(f"/v1/items/{_path(segments[drop])}"), 204)
            self.live.discard(segments[drop])

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete_item(self, data: st.DataObject) -> None:
        """An image, a document or a single video segment."""
        self.calls["delete_item"] += 1
        media_id = data.draw(st.sampled_from(sorted(self.live)), label="delete")
        self._ok(self.client.delete(f"/v1/items/{_path(media_id)}"), 204)
        self.live.discard(media_id)

    @precondition(lambda self: any(self.live & set(s) for s in self.videos.values()))
    @rule(data=st.data())
    def delete_video(self, data: st.DataObject) -> None:
        self.calls["delete_video"] += 1
        video_id = data.draw(
            st.sampled_from(sorted(v for v, s in self.videos.items() if self.live & set(s))),
            label="video",
        )
        body = self._ok(self.client.delete(f"/v1/videos/{_path(video_id)}"))
        assert body["deleted"] == len(self.live & set(self.videos[video_id]))
        self.live -= set(self.videos[video_id])

    # -- versions ----------------------------------------------------------------------------
    def _start(self, bundle: str | None, hold: bool) -> None:
        self.gate.open.clear()
        body: dict[str, Any] = {"promote": "manual"}
        if bundle == "narrow":
            body["bundle"] = str(self.narrow)
        record = self._ok(self.client.post("/v1/admin/reindex", json=body), 202)
        self.build = {"id": record["id"], "state": "building", "bundle": bundle or self.serving}
        if not hold:
            self._finish()

    @precondition(lambda self: self.build is None)
    @rule(hold=st.booleans())
    def start_reindex(self, hold: bool) -> None:
        """A reindex with the bundle that serves now; with ``hold``, held inside its first
        embed until ``finish_build`` or ``cancel_build``, else built (ready) at once."""
        self.calls["start_reindex"] += 1
        self._start(None, hold)

    @precondition(
        lambda self: (
            self.build is None
            and (self.serving == "narrow" or not any(m.startswith("img") for m in self.live))
        )
    )
    @rule(hold=st.booleans())
    def start_rollout(self, hold: bool) -> None:
        """A rollout onto tiny-narrow (a reindex when it serves already). Not while images
        posted inline are there: their bytes were never stored, so another bundle cannot make
        them again (the rollout reports them ``missing``, as documented)."""
        self.calls["start_rollout"] += 1
        self._start("narrow", hold)

    @precondition(lambda self: self.build is not None and self.build["state"] == "building")
    @rule()
    def finish_build(self) -> None:
        self.calls["finish_build"] += 1
        self._finish()

    def _finish(self) -> None:
        assert self.build is not None
        self.gate.open.set()
        done = wait_rollout(
            lambda i: self._ok(self.client.get(f"/v1/admin/reindex/{i}")), self.build["id"]
        )
        assert done["state"] == "ready", done
        assert done["missing"] == 0, done
        self.build["state"] = "ready"

    @precondition(lambda self: self.build is not None and self.build["state"] == "ready")
    @rule()
    def promote(self) -> None:
        self.calls["promote"] += 1
        assert self.build is not None
        done = self._ok(self.client.post(f"/v1/admin/reindex/{self.build['id']}/promote"))
        assert done["state"] == "completed", done
        self.previous, self.serving = self.serving, self.build["bundle"]
        self.build = None

    @precondition(lambda self: self.build is not None)
    @rule()
    def cancel_build(self) -> None:
        self.calls["cancel_build"] += 1
        assert self.build is not None
        self.gate.open.set()
        done = self._ok(self.client.delete(f"/v1/admin/reindex/{self.build['id']}"))
        assert done["state"] == "cancelled", done
        self.build = None

    @precondition(lambda self: self.previous is not None and self.build is None)
    @rule()
    def rollback(self) -> None:
        """Back to the previous version; a second one rolls forward again."""
        self.calls["rollback"] += 1
        self._ok(self.client.post("/v1/admin/rollback", json={}))
        self.previous, self.serving = self.serving, self.previous

    # -- what a user sees --------------------------------------------------------------------
    @invariant()
    def every_id_answers_as_the_model_says(self) -> None:
        seen = {
            media_id
            for media_id in sorted(self.known)
            if self.client.get(f"/v1/items/{_path(media_id)}").status_code == 200
        }
        assert seen == self.live, {"back": seen - self.live, "lost": self.live - seen}

    @invariant()
    def every_version_it_could_serve_holds_the_same(self) -> None:
        """The previous version (what a rollback serves) and a built next one (what a promote
        serves) hold one point per item the model holds, as the current one does."""
        body = self._ok(self.client.get("/v1/collections/media"))
        ready = self.build is not None and self.build["state"] == "ready"
        counts = {
            v["role"]: v["points"]
            for v in body["versions"]
            if v["role"] in ("current", "previous") or (v["role"] == "next" and ready)
        }
        assert counts == dict.fromkeys(counts, len(self.live)), (counts, len(self.live))
        assert ("previous" in counts) == (self.previous is not None), counts

    @invariant()
    def search_finds_nothing_deleted(self) -> None:
        live_points = {self.points[m] for m in self.live}
        gone_points = {self.points[m] for m in self.known - self.live}
        for mode in ("caption", "description", "image"):
            r = self.client.post(
                "/v1/search", json={"text": "a square", "limit": 100, "mode": mode}
            )
            if r.status_code == 400:  # a mode no stored item has a vector for
                continue
            hits = {h["id"] for h in self._ok(r)["hits"]}
            assert not hits & gone_points, {"mode": mode, "deleted but found": hits & gone_points}
            assert hits <= live_points | gone_points, hits - live_points


def _build(settings: Settings) -> Any:
    from clipsearch.bootstrap import build_components

    return build_components(settings)


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture
def lifecycle(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path, video_bytes: bytes
) -> Iterator[type[Lifecycle]]:
    Lifecycle.workdir, Lifecycle.bundle_dir, Lifecycle.narrow = (
        tmp_path,
        tiny_bundle_dir,
        tiny_narrow_bundle_dir,
    )
    Lifecycle.video = video_bytes
    Lifecycle.calls.clear()
    yield Lifecycle


def test_items_seen_are_written_minus_deleted_across_versions(
    lifecycle: type[Lifecycle],
) -> None:
    run_state_machine_as_test(
        lifecycle,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    # The run went through every kind of step (a machine that only ever adds proves nothing).
    assert set(lifecycle.calls) == RULES, dict(lifecycle.calls)
