"""Cluster-wide settings on real processes: the collection records what it was built with, and a
process whose own setting disagrees refuses — `clipsearch serve` and `clipsearch writer` at
start-up (non-zero exit, the setting's variable and both values on stderr), a Celery
`clipsearch indexer` per job (the job shows why). An indexer's allowed-roots error names the
indexer's own setting, not the gateway's `--allow-root`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from indexer.distributed.stream import PointStream, stream_key
from indexer.distributed.writer import Writer
from indexer.jobs.celery_queue import CeleryJobQueue
from service.core.bundle.manifest import load_bundle
from service.core.config import Settings
from service.core.contract import CollectionSettings
from service.core.domain import collection_dims
from service.store.edge import QdrantEdgeStore
from service.store.versions import VersionedStore
from tests.indexer.distributed.test_batches import write_images
from tests.redis_server import redis_server
from tests.support import free_port, running_gateway, wait_for_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
START_S = 120


def _env(**settings: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for name in [n for n in env if n.startswith("CLIPSEARCH_")]:
        del env[name]
    env["CLIPSEARCH_GRPC_PORT"] = "0"
    return {**env, **settings}


def _stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def _recorded(data_dir: Path) -> CollectionSettings | None:
    store = VersionedStore(QdrantEdgeStore(data_dir))
    try:
        return CollectionSettings.from_metadata(store.metadata_of("media")[1])
    finally:
        store.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Path:
    """The data dir of a collection that a real gateway created with 5 s video segments."""
    tmp = tmp_path_factory.mktemp("cluster-settings")
    env = {k: v for k, v in _env().items() if k.startswith("CLIPSEARCH_")}
    with running_gateway(tmp, tiny_bundle_dir, env={**env, "CLIPSEARCH_VIDEO__SEGMENT_S": "5"}):
        pass
    return tmp / "data"


def test_the_gateway_records_its_settings_in_the_collection(
    built: Path, tiny_bundle_dir: Path
) -> None:
    recorded = _recorded(built)
    assert recorded is not None
    assert recorded.bundle == load_bundle(tiny_bundle_dir).manifest.ref
    assert (recorded.video.segmenting, recorded.video.segment_s) == ("fixed", 5.0)


def _serve(data_dir: Path, bundle: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipsearch", "serve", "--port", str(free_port()),
         "--data-dir", str(data_dir), "--bundle", str(bundle)],
        env=_env(**settings), capture_output=True, text=True, timeout=START_S, check=False,
    )  # fmt: skip


def test_a_gateway_with_another_segment_length_refuses_to_start(
    built: Path, tiny_bundle_dir: Path
) -> None:
    result = _serve(built, tiny_bundle_dir, CLIPSEARCH_VIDEO__SEGMENT_S="10")
    assert result.returncode == 1, result.stderr
    assert _stderr_lines(result)[-1] == (
        "clipsearch cannot start: CLIPSEARCH_VIDEO__SEGMENT_S=10 here, but collection 'media' "
        "was built with 5; set it to 5 or reindex"
    )
    assert _recorded(built) is not None and _recorded(built).video.segment_s == 5.0  # type: ignore[union-attr]


def test_a_gateway_that_does_not_serve_the_collections_bundle_refuses_to_start(
    built: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    result = _serve(built, tiny_narrow_bundle_dir, CLIPSEARCH_VIDEO__SEGMENT_S="5")
    assert result.returncode == 1, result.stderr
    built_with = load_bundle(tiny_bundle_dir).manifest.ref
    served = load_bundle(tiny_narrow_bundle_dir).manifest.ref
    assert _stderr_lines(result)[-1].startswith(
        f"clipsearch cannot start: CLIPSEARCH_BUNDLE={served} here, but collection 'media' was "
        f"built with {built_with}; serve {built_with} (CLIPSEARCH_BUNDLE, or beside it "
        "CLIPSEARCH_ENCODER__EXTRA_BUNDLES"
    )


def test_a_writer_with_another_segment_length_refuses_to_start_and_one_that_agrees_runs(
    built: Path, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "redis") as url:
        common = {"CLIPSEARCH_DATA_DIR": str(built), "CLIPSEARCH_BROKER__URL": url}
        command = [sys.executable, "-m", "clipsearch", "writer"]
        refused = subprocess.run(
            command,
            env=_env(**common, CLIPSEARCH_VIDEO__SEGMENT_S="10"),
            capture_output=True,
            text=True,
            timeout=START_S,
            check=False,
        )
        assert refused.returncode == 2, refused.stderr
        assert _stderr_lines(refused)[-1].endswith(
            "the writer cannot start: CLIPSEARCH_VIDEO__SEGMENT_S=10 here, but collection "
            "'media' was built with 5; set it to 5 or reindex"
        )
        # The same writer with the collection's value starts: it joins the points stream.
        log = (tmp_path / "writer.log").open("wb")
        proc = subprocess.Popen(
            command,
            env=_env(**common, CLIPSEARCH_VIDEO__SEGMENT_S="5"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + START_S
            while not client.exists(stream_key("media")):
                assert proc.poll() is None, (tmp_path / "writer.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "writer.log").read_text()
                time.sleep(0.1)
            client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, (tmp_path / "writer.log").read_text()
            log.close()


# -- the Celery indexer ------------------------------------------------------------------------


@dataclass
class Indexer:
    url: str
    sources: Path  # the indexer's allowed root
    gateway_only: Path  # a folder only the gateway may read
    store: QdrantEdgeStore  # where the writer in this process writes the indexer's points


@pytest.fixture(scope="module")
def indexer(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Indexer]:
    """A real `clipsearch indexer` with 10 s segments, and a writer (which counts progress)."""
    base = tmp_path_factory.mktemp("settings-indexer")
    sources, gateway_only = base / "sources", base / "gateway-only"
    write_images(sources, 3)
    write_images(gateway_only, 1)
    with redis_server(base / "redis") as url:
        env = _env(
            CLIPSEARCH_BROKER__URL=url,
            CLIPSEARCH_BUNDLE=str(tiny_bundle_dir),
            CLIPSEARCH_DATA_DIR=str(base / "indexer-data"),
            CLIPSEARCH_SOURCES__ALLOWED_ROOTS=str(sources),
            CLIPSEARCH_VIDEO__SEGMENT_S="10",
            CLIPSEARCH_ENCODER__PREPROCESS_THREADS="1",
        )
        with (base / "indexer.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clipsearch", "indexer", "--name", "settings@%h"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        store = QdrantEdgeStore(base / "store")
        spaces = load_bundle(tiny_bundle_dir).manifest.spaces
        store.ensure_collection("media", collection_dims(spaces.model_dump(exclude_none=True)))
        settings = Settings(broker={"url": url, "writer_block_ms": 200})  # type: ignore[arg-type]
        writer = Writer(url, store, settings, consumer="settings-writer")
        try:
            yield Indexer(url, sources, gateway_only, store)
        finally:
            writer.close()
            store.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def _job(
    tmp: Path,
    indexer: Indexer,
    recorded: dict[str, Any],
    source: dict[str, Any],
    roots: list[Path] | None = None,
) -> dict[str, Any]:
    """A job sent as the gateway sends it (``CeleryJobQueue``, in this process, whose allowed
    roots may differ from the indexer's), with the collection's ``recorded`` settings; the job
    once it ended."""
    settings = Settings(
        data_dir=tmp / "gateway",
        broker={"url": indexer.url},
        sources={"allowed_roots": roots or [indexer.sources]},
    )  # type: ignore[arg-type]
    queue = CeleryJobQueue(settings, PointStream(indexer.url, settings.broker), lambda _: recorded)
    try:
        kind = "ingest_directory" if "directory" in source else "ingest"
        job_id = queue.submit(kind, {"source": source})
        return wait_for_job(queue.status, job_id, timeout=START_S)
    finally:
        queue.close()


def _contract(tiny_bundle_dir: Path, **changes: Any) -> dict[str, Any]:
    """The indexer's own settings as a collection records them, with ``changes``."""
    settings = Settings(video={"segment_s": 10})  # type: ignore[arg-type]
    own = CollectionSettings.of(
        settings, bundle=load_bundle(tiny_bundle_dir).manifest.ref, max_chunks=512
    )
    return own.model_copy(update=changes).model_dump(mode="json")


def test_an_indexer_refuses_a_job_for_a_collection_built_with_another_segment_length(
    indexer: Indexer, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    five = _contract(tiny_bundle_dir)
    five["video"]["segment_s"] = 5.0
    job = _job(tmp_path, indexer, five, {"directory": str(indexer.sources)})
    assert job["state"] == "failed", job
    assert job["error"] == (
        f"CLIPSEARCH_VIDEO__SEGMENT_S=10 in indexer {socket.gethostname()}, but collection "
        "'media' was built with 5; set it to 5 or reindex"
    )


def test_an_indexer_refuses_batches_for_a_collection_of_another_bundle(
    indexer: Indexer, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    other = _contract(tiny_bundle_dir, bundle="tiny-narrow@9")
    job = _job(tmp_path, indexer, other, {"directory": str(indexer.sources)})
    ref = load_bundle(tiny_bundle_dir).manifest.ref
    assert (job["done"], job["failed"]) == (0, 3), job
    reasons = {e["reason"] for e in job["errors"]}
    assert len(reasons) == 1, reasons
    assert reasons.pop().startswith(
        f"CLIPSEARCH_BUNDLE={ref} in indexer {socket.gethostname()}, but collection 'media' was "
        "built with tiny-narrow@9; serve tiny-narrow@9"
    )
    assert indexer.store.count("media") == 0


def test_an_indexer_that_agrees_indexes_and_its_roots_error_names_its_own_setting(
    indexer: Indexer, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    agreeing = _contract(tiny_bundle_dir)
    job = _job(tmp_path / "a", indexer, agreeing, {"directory": str(indexer.sources)})
    assert (job["state"], job["done"], job["failed"]) == ("completed", 3, 0), job
    assert indexer.store.count("media") == 3

    # The gateway may read both folders; the indexer only its own root.
    manifest = indexer.gateway_only / "list.jsonl"
    manifest.write_text('{"uri": "img-0000.png"}\n')
    roots = [indexer.sources, indexer.gateway_only]
    job = _job(tmp_path / "b", indexer, agreeing, {"manifest": str(manifest)}, roots)
    assert job["state"] == "failed", job
    assert "is outside the allowed roots" in job["error"], job
    assert "CLIPSEARCH_SOURCES__ALLOWED_ROOTS" in job["error"]
    assert "of this `clipsearch indexer` and restart it" in job["error"]
    assert "restart the gateway" not in job["error"]
