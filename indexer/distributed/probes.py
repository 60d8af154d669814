"""Health probes and Prometheus metrics of the processes that have no gateway in front: the
indexer (a Celery worker) and the standalone writer.

:class:`ProbeServer` is a small HTTP server on its own thread (``broker.probe_port``, or
``--probe-port``; off by default) answering ``/health/live``, ``/health/ready`` (200, or 503 with
the reason, as JSON) and ``/metrics`` (the process's registry). The two checks it calls answer
from state the process keeps anyway (no Redis or store call on the probe's path), so a probe
takes milliseconds even while a dependency hangs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.core.collector import PAUSES

log = logging.getLogger(__name__)

# (ok, reason when not ok)
Check = Callable[[], tuple[bool, str | None]]


# The writer inside a gateway names its count apart from the gateway's own (items API) one:
# one exposition may not hold a metric family twice.
GATEWAY_WRITER_POINTS = "clipsearch_writer_points_upserted_total"


class WriterMetrics:
    """What a writer did; ``points_upserted`` counts points the store accepted (distinct ids
    per upsert), so on a fresh collection it equals the collection's point count. It is
    ``clipsearch_points_upserted_total`` in ``clipsearch writer``, ``points_metric`` (see
    ``GATEWAY_WRITER_POINTS``) where another count of that name shares the exposition."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        points_metric: str = "clipsearch_points_upserted_total",
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.points_upserted = Counter(
            points_metric.removesuffix("_total"),
            "Points upserted into the store by the points writer",
            registry=self.registry,
        )
        self.entries = Counter(
            "clipsearch_writer_entries_total",
            "Stream entries acknowledged, by outcome (written, refused, unreadable, dead_letter)",
            ["outcome"],
            registry=self.registry,
        )
        self.write_failures = Counter(
            "clipsearch_writer_write_failures_total",
            "Write attempts that left entries pending (store or disk unavailable)",
            registry=self.registry,
        )
        self.claimed = Counter(
            "clipsearch_writer_claimed_total",
            "Stream entries taken over from writers that went idle",
            registry=self.registry,
        )
        self.consumers_forgotten = Counter(
            "clipsearch_writer_consumers_forgotten_total",
            "Idle consumers removed from the writers group",
            registry=self.registry,
        )
        self.healthy = Gauge(
            "clipsearch_writer_healthy",
            "1 while the writer writes; 0 while it cannot (and has stopped claiming)",
            registry=self.registry,
        )


class IndexerMetrics:
    """What an indexer's tasks did (counted in the worker process: pools ``solo`` and
    ``threads``; a prefork pool's children would each count alone)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.tasks = Counter(
            "clipsearch_indexer_tasks_total",
            "Tasks run, by task and outcome (ok, retry, failed)",
            ["task", "outcome"],
            registry=self.registry,
        )
        self.items = Counter(
            "clipsearch_indexer_items_total",
            "Items handled by index_batch tasks, by outcome (sent, skipped, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "clipsearch_indexer_task_seconds",
            "Time a task ran, by task",
            ["task"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "clipsearch_indexer_ready", "1 when the indexer takes tasks", registry=self.registry
        )
        PAUSES.expose(self.registry)  # the process's garbage-collector pauses


class ProbeServer:
    """``/health/live``, ``/health/ready`` and ``/metrics`` on ``host:port`` (port 0 = any
    free port: ``port`` says which); ``close()`` stops it."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, *, live: Check, ready: Check
    ) -> None:
        routes: dict[str, Check] = {"/health/live": live, "/health/ready": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                    return
                check = routes.get(path)
                if check is None:
                    self._json(404, {"status": "not found", "reason": f"no route {path}"})
                    return
                try:
                    ok, reason = check()
                except Exception as exc:  # a broken check must read as not ok, not hang
                    ok, reason = False, f"the check failed: {exc!r}"
                body: dict[str, Any] = {"status": "ok" if ok else "unavailable"}
                if reason:
                    body["reason"] = reason
                self._json(200 if ok else 503, body)

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # probes every few seconds would flood the log

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="probe-server", daemon=True
        )
        self._thread.start()
        log.info("probes and metrics on http://%s:%d (/health/ready, /metrics)", host, self.port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
