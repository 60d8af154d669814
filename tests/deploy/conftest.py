"""Session fixtures: the real tools, and each rendering made once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.kube import (
    GPU_PROD_VALUES,
    KUBE_VERSIONS,
    OVERLAYS,
    Doc,
    Tools,
    get_tools,
    helm_template,
    kustomize,
)


@pytest.fixture(scope="session")
def tools() -> Tools:
    return get_tools()


class Renders:
    """helm template / kubectl kustomize, each distinct call made once per session."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools
        self._cache: dict[tuple[object, ...], list[Doc]] = {}

    def chart(
        self, *values: Path, sets: tuple[str, ...] = (), version: str = KUBE_VERSIONS[-1]
    ) -> list[Doc]:
        key = ("chart", values, sets, version)
        if key not in self._cache:
            self._cache[key] = helm_template(
                self.tools, values=values, sets=sets, kube_version=version
            )
        return self._cache[key]

    def overlay(self, name: str) -> list[Doc]:
        key = ("overlay", name)
        if key not in self._cache:
            self._cache[key] = kustomize(self.tools, OVERLAYS / name)
        return self._cache[key]


@pytest.fixture(scope="session")
def renders(tools: Tools) -> Renders:
    return Renders(tools)


# Every rendering operators deploy: the chart with its defaults and with the GPU production
# values, and the two kustomize overlays.
RENDERINGS: dict[str, Callable[[Renders], list[Doc]]] = {
    "chart-default": lambda r: r.chart(),
    "chart-gpu-prod": lambda r: r.chart(GPU_PROD_VALUES),
    "kustomize-cpu-dev": lambda r: r.overlay("cpu-dev"),
    "kustomize-gpu-prod": lambda r: r.overlay("gpu-prod"),
}


# Value combinations beyond those, validated too.
VARIANTS = {
    # Qdrant, Redis and the encoder workers all outside the release, KEDA on, TLS to Redis.
    "external": (
        "worker.enabled=false",
        "config.externalEncoderEndpoints[0]=gpu-1.example.com:50051",
        "qdrant.enabled=false",
        "qdrant.external.url=https://qdrant.example.com:6333",
        "qdrant.existingSecret=qdrant",
        "redis.enabled=false",
        "redis.external.host=redis.example.com",
        "redis.external.tls=true",
        "redis.existingSecret=redis",
        "indexer.keda.enabled=true",
    ),
    # Volumes and options that default off.
    "options": (
        "worker.engineCache.persistence=true",
        "worker.runtimeClassName=nvidia",
        "bundles.existingClaim=bundles",
        "sharedData.existingClaim=shared",
        "gateway.grpc.enabled=false",
        "qdrant.replicas=3",
        "networkPolicy.enabled=false",
        # Both Ingresses: the public one without the admin paths, the internal one with them.
        "gateway.ingress.enabled=true",
        "gateway.adminIngress.enabled=true",
    ),
    # No keys, on a trusted network.
    "anonymous": ("auth.existingSecret=", "auth.allowAnonymous=true"),
    # The gateway alone: encoder, store and jobs embedded in it (one process: one replica).
    "embedded": (
        "gateway.replicas=1",
        "worker.enabled=false",
        "indexer.enabled=false",
        "redis.enabled=false",
        "qdrant.enabled=false",
    ),
}


@pytest.fixture(params=sorted(RENDERINGS))
def manifests(request: pytest.FixtureRequest, renders: Renders) -> list[Doc]:
    return RENDERINGS[request.param](renders)
