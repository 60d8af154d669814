"""Prometheus metrics of the gateway, one registry per app (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.core.collector import PAUSES


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "clipsearch_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "clipsearch_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
        )
        self.errors = Counter(
            "clipsearch_errors_total",
            "Mapped failures by error type and transport",
            ["type", "transport"],
            registry=self.registry,
        )
        self.search_latency = Histogram(
            "clipsearch_search_seconds",
            "Search latency (embed + vector search + fusion) by mode",
            ["mode"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "clipsearch_ready", "1 when the gateway is ready to serve", registry=self.registry
        )
        PAUSES.expose(self.registry)  # the process's garbage-collector pauses
