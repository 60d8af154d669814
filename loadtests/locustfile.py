"""Locust scenarios against a clipsearch gateway (``make loadtest PROFILE=...``; the profiles are in
``loadtests/profiles.py``; the README's "Load tests" says how to aim them at a deployed cluster).

Run it through locust's CLI only: this file imports locust and the standard library and nothing
else, because locust's gevent monkey-patching crashes a process that already imported ssl, httpx
or redis (``loadtests.loadtest`` starts locust as a subprocess for that reason).

User classes (pick them by name on the command line; a profile does):

- ``TextSearchUser``: ``POST /v1/search`` with a text query in mixed modes (auto, image, caption,
  description), one stats row per mode;
- ``ImageSearchUser``: ``POST /v1/search/image``, multipart uploads of the images in
  ``$LOADTEST_IMAGES`` (the demo's, under ``make loadtest``), or of small generated PNGs;
- ``EmbeddingsUser``: OpenAI-shaped ``POST /v1/embeddings``, one sentence and
  ``$LOADTEST_EMBED_BATCH`` sentences (16) per request; ``SingleEmbeddingUser``: one sentence
  per request only (the peer comparison's profile);
- ``ItemReadUser``: ``GET /v1/items/{id}`` on ids that searches returned;
- ``BulkIngestUser`` (one at most): ``POST /v1/ingest`` of ``$LOADTEST_INGEST_BATCH`` text
  documents (50) per job, then follows the job to its end; searchers search meanwhile;
- ``TenantBurstUser`` and ``TenantUser`` (two tenants, each with its own key and collection, for
  the per-key rate limits): the burst user is one tenant's bulk script, ``POST /v1/search`` closed
  loop on ``$LOADTEST_BURST_COLLECTION`` with ``$LOADTEST_BURST_KEY``, for which a 429 that carries
  ``Retry-After`` is the expected answer (its own row, ``/v1/search [burst 429 limited]``); the
  tenant user (two at most) searches ``$LOADTEST_TENANT_COLLECTION`` with ``$LOADTEST_TENANT_KEY``
  once a second each, under its limit, and any answer but 200 fails it.

Environment: ``CLIPSEARCH_API_KEY`` (sent as ``Authorization: Bearer``), ``LOADTEST_MODEL`` (the
embeddings ``model``; found from ``/health/ready`` when unset), ``LOADTEST_IMAGES``,
``LOADTEST_EMBED_BATCH``, ``LOADTEST_INGEST_BATCH``; the tenant users' ``LOADTEST_BURST_KEY``,
``LOADTEST_BURST_COLLECTION``, ``LOADTEST_TENANT_KEY``, ``LOADTEST_TENANT_COLLECTION``. A run
exits non-zero on any failed request, and when it made no request at all.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import struct
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.env import Environment

HERE = Path(__file__).resolve().parent
# The sentences the embeddings users send; the peer comparison's ceiling runs on the same file.
SENTENCES = [
    s for s in (HERE / "data" / "sentences.txt").read_text(encoding="utf-8").splitlines() if s
]
QUERIES = ["a cat", "a red circle", "a dog in the snow", "a person riding a bike", *SENTENCES[:60]]
SEARCH_MODES = ("auto", "auto", "image", "caption", "description")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGES = 64
# Ids that searches returned, for the item readers (one process: locust's users are greenlets).
SEEN_IDS: collections.deque[str] = collections.deque(maxlen=2000)
RUN = uuid.uuid4().hex[:8]  # ingested documents' ids are unique per run
_model: list[str] = []


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


EMBED_BATCH = _env_int("LOADTEST_EMBED_BATCH", 16)
INGEST_BATCH = _env_int("LOADTEST_INGEST_BATCH", 50)


def png(width: int, height: int, left: tuple[int, int, int], right: tuple[int, int, int]) -> bytes:
    """A two-colour PNG (left and right halves), written with the standard library alone."""
    half = width // 2
    row = b"\x00" + bytes(left) * half + bytes(right) * (width - half)

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _images() -> list[tuple[str, bytes]]:
    folder = os.environ.get("LOADTEST_IMAGES", "").strip()
    if folder:
        paths = sorted(
            p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not paths:
            raise SystemExit(f"LOADTEST_IMAGES={folder}: no images there")
        return [(p.name, p.read_bytes()) for p in paths[:MAX_IMAGES]]
    colours = [(220, 30, 30), (30, 160, 40), (40, 60, 210), (240, 220, 40), (20, 20, 20)]
    return [
        (f"generated-{i}-{j}.png", png(96, 96, a, b))
        for i, a in enumerate(colours)
        for j, b in enumerate(colours)
        if i != j
    ]


IMAGES = _images()


def multipart(fields: dict[str, str], name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with ``fields`` and one file part called ``file``."""
    boundary = uuid.uuid4().hex
    kind = "image/png" if name.lower().endswith(".png") else "application/octet-stream"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {kind}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class _Clipsearch(FastHttpUser):
    """Every user: the API key (if any) on each request, closed loop (no think time)."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        key = os.environ.get("CLIPSEARCH_API_KEY", "").strip()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.rng = random.Random()

    def post_json(self, path: str, body: dict[str, Any], name: str) -> dict[str, Any] | None:
        """POST ``body``; a non-2xx answer or a body that is not a JSON object fails the request."""
        with self.client.post(
            path, json=body, headers=self.headers, name=name, catch_response=True
        ) as response:
            return _json_object(response)

    def search_ids(self, body: dict[str, Any], name: str) -> None:
        answer = self.post_json("/v1/search", body, name)
        if answer is not None:
            SEEN_IDS.extend(hit["id"] for hit in answer.get("hits", []))


def _json_object(response: Any) -> dict[str, Any] | None:
    if not 200 <= (response.status_code or 0) < 300:
        response.failure(f"HTTP {response.status_code}: {(response.text or '')[:300]}")
        return None
    try:
        answer = json.loads(response.content)
    except ValueError:
        response.failure(f"not JSON: {(response.text or '')[:300]}")
        return None
    if not isinstance(answer, dict):
        response.failure("not a JSON object")
        return None
    return answer


def _check_hits(response: Any, answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is not None and not isinstance(answer.get("hits"), list):
        response.failure(f"no hits list: {str(answer)[:300]}")
        return None
    return answer


class TextSearchUser(_Clipsearch):
    weight = 4

    @task
    def search_text(self) -> None:
        mode = self.rng.choice(SEARCH_MODES)
        body = {"text": self.rng.choice(QUERIES), "mode": mode, "limit": 10}
        with self.client.post(
            "/v1/search",
            json=body,
            headers=self.headers,
            name=f"/v1/search [{mode}]",
            catch_response=True,
        ) as response:
            answer = _check_hits(response, _json_object(response))
            if answer is not None:
                SEEN_IDS.extend(hit["id"] for hit in answer["hits"])


class ImageSearchUser(_Clipsearch):
    weight = 2

    @task
    def search_image(self) -> None:
        name, data = self.rng.choice(IMAGES)
        mode = self.rng.choice(("auto", "image"))
        body, content_type = multipart({"mode": mode, "limit": "10"}, name, data)
        with self.client.post(
            "/v1/search/image",
            # geventhttpclient sends bytes as they are; FastHttpSession's annotation says str.
            data=cast(str, body),
            headers={**self.headers, "Content-Type": content_type},
            name=f"/v1/search/image [{mode}]",
            catch_response=True,
        ) as response:
            _check_hits(response, _json_object(response))


def _model_name(user: _Clipsearch) -> str:
    """``$LOADTEST_MODEL``, or the default bundle that ``/health/ready`` names (asked once)."""
    if not _model:
        given = os.environ.get("LOADTEST_MODEL", "").strip()
        if given:
            _model.append(given)
        else:
            with user.client.get(
                "/health/ready", headers=user.headers, catch_response=True
            ) as response:
                answer = _json_object(response) or {}
                models = [m for m in answer.get("models", []) if isinstance(m, dict)]
                default = [m for m in models if m.get("default")] or models
                if not default:
                    response.failure(f"no model in /health/ready: {str(answer)[:300]}")
                    return "unknown"
                _model.append(str(default[0]["bundle"]))
    return _model[0]


class _Embeddings(_Clipsearch):
    abstract = True

    def on_start(self) -> None:
        super().on_start()
        self.model = _model_name(self)

    def embed(self, texts: list[str]) -> None:
        body: dict[str, Any] = {
            "model": self.model,
            "input": texts[0] if len(texts) == 1 else texts,
        }
        with self.client.post(
            "/v1/embeddings",
            json=body,
            headers=self.headers,
            name=f"/v1/embeddings [{len(texts)}]",
            catch_response=True,
        ) as response:
            answer = _json_object(response)
            if answer is None:
                return
            data = answer.get("data")
            if not isinstance(data, list) or len(data) != len(texts):
                response.failure(f"expected {len(texts)} embeddings: {str(answer)[:300]}")
            elif not all(isinstance(d.get("embedding"), list) and d["embedding"] for d in data):
                response.failure("an embedding is empty")


class EmbeddingsUser(_Embeddings):
    weight = 2

    @task(3)
    def one_sentence(self) -> None:
        self.embed([self.rng.choice(SENTENCES)])

    @task(1)
    def batch(self) -> None:
        start = self.rng.randrange(len(SENTENCES))
        self.embed(list(itertools.islice(itertools.cycle(SENTENCES), start, start + EMBED_BATCH)))


class SingleEmbeddingUser(_Embeddings):
    """One sentence per request, closed loop: what the peer comparison runs against each server."""

    weight = 1

    @task
    def one_sentence(self) -> None:
        self.embed([self.rng.choice(SENTENCES)])


class ItemReadUser(_Clipsearch):
    weight = 1

    @task
    def read_item(self) -> None:
        if not SEEN_IDS:  # nothing seen yet: a search finds some ids (its row is its own)
            self.search_ids({"text": self.rng.choice(QUERIES), "limit": 20}, "/v1/search [ids]")
            if not SEEN_IDS:
                return
        item_id = self.rng.choice(SEEN_IDS)
        with self.client.get(
            f"/v1/items/{quote(item_id, safe='')}",
            headers=self.headers,
            name="/v1/items/[id]",
            catch_response=True,
        ) as response:
            answer = _json_object(response)
            if answer is not None and answer.get("id") != item_id:
                response.failure(f"asked for {item_id}, got {answer.get('id')}")


class BulkIngestUser(_Clipsearch):
    """Ingests while the others search: one job of text documents at a time, followed to its end
    (a job that fails, or fails an item, fails its ``/v1/jobs/[id]`` row)."""

    fixed_count = 1
    poll_s = 0.25
    job_timeout_s = 300.0

    def on_start(self) -> None:
        super().on_start()
        self.serial = itertools.count()

    @task
    def ingest(self) -> None:
        lines = []
        for _ in range(INGEST_BATCH):
            n = next(self.serial)
            text = self.rng.choice(SENTENCES)
            lines.append({"id": f"loadtest-{RUN}-{n}", "description": text, "caption": text})
        answer = self.post_json(
            "/v1/ingest", {"source": {"manifest_lines": lines}}, "/v1/ingest [manifest]"
        )
        if answer is None or "job_id" not in answer:
            return
        self.follow(str(answer["job_id"]))

    def follow(self, job_id: str) -> None:
        deadline = time.monotonic() + self.job_timeout_s
        while True:
            with self.client.get(
                f"/v1/jobs/{job_id}",
                headers=self.headers,
                name="/v1/jobs/[id]",
                catch_response=True,
            ) as response:
                job = _json_object(response)
                if job is None:
                    return
                state = job.get("state")
                if state not in ("queued", "running"):
                    if state != "completed" or job.get("failed"):
                        response.failure(f"job {job_id} ended {state}: {str(job)[:300]}")
                    return
                if time.monotonic() > deadline:
                    response.failure(f"job {job_id} still {state} after {self.job_timeout_s} s")
                    return
            time.sleep(self.poll_s)  # gevent's: the other users run meanwhile


def _tenant_env(prefix: str) -> tuple[str, str]:
    """``$<prefix>_KEY`` and ``$<prefix>_COLLECTION``; a missing one stops the user with an error
    (and the run exits non-zero): a tenant profile without its keys would measure nothing."""
    names = (f"{prefix}_KEY", f"{prefix}_COLLECTION")
    key, collection = (os.environ.get(name, "").strip() for name in names)
    missing = [name for name, value in zip(names, (key, collection), strict=True) if not value]
    if missing:
        raise ValueError(f"{' and '.join(missing)} must be set for the tenant profiles")
    return key, collection


class _Tenant(_Clipsearch):
    """A tenant: its own key and collection from ``<PREFIX>_KEY`` / ``<PREFIX>_COLLECTION``."""

    abstract = True
    prefix = ""

    def on_start(self) -> None:
        super().on_start()
        key, self.collection = _tenant_env(self.prefix)
        self.headers = {"Authorization": f"Bearer {key}"}

    def post_search(self, name: str) -> Any:
        body = {"text": self.rng.choice(QUERIES), "collection": self.collection, "limit": 10}
        return self.client.post(
            "/v1/search", json=body, headers=self.headers, name=name, catch_response=True
        )


class TenantBurstUser(_Tenant):
    """One tenant's bulk script: searches its own collection closed loop with its own key, far
    over its rate limit. A 429 with ``Retry-After`` is the limit doing its work and counts as a
    success on its own row; a 429 without it, or any other error, fails the request."""

    weight = 1
    prefix = "LOADTEST_BURST"

    @task
    def search(self) -> None:
        with self.post_search("/v1/search [burst]") as response:
            if response.status_code == 429:
                retry_after = (response.headers.get("Retry-After") or "").strip()
                if retry_after.isdigit() and int(retry_after) >= 1:
                    response.request_meta["name"] = "/v1/search [burst 429 limited]"
                    response.success()
                else:
                    text = (response.text or "")[:300]
                    response.failure(f"HTTP 429 without a Retry-After: {text}")
                return
            _check_hits(response, _json_object(response))


class TenantUser(_Tenant):
    """Another tenant searching its own collection at a steady pace under its limit (once a second
    per user), while the burst user hammers; any answer but 200 (a 429 included) fails it."""

    fixed_count = 2
    wait_time = constant_throughput(1)
    prefix = "LOADTEST_TENANT"

    @task
    def search(self) -> None:
        with self.post_search("/v1/search [tenant]") as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:300]}")
                return
            _check_hits(response, _json_object(response))


@events.quitting.add_listener
def _fail_on_nothing_or_errors(environment: Environment, **_: Any) -> None:
    """Exit 1 on any failed request (locust's own rule too), and on a run that made no request."""
    stats = environment.stats.total
    if stats.num_requests == 0 or stats.num_failures:
        environment.process_exit_code = 1
