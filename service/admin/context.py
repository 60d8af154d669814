"""What the dashboard needs from the gateway, as protocols: ``admin`` sits below ``gateway`` in
the layers (the gateway mounts it), so it names the shapes it reads, never the gateway's types.
The gateway's ``Runtime`` and ``Components`` satisfy them."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry

from service.clients.admin import Reindexer
from service.clients.base import EmbeddingClient, JobQueue
from service.core.config import Settings
from service.search.planner import SearchService
from service.store.versions import VersionedStore


class AdminComponents(Protocol):
    @property
    def embedder(self) -> EmbeddingClient: ...

    @property
    def store(self) -> VersionedStore: ...

    @property
    def jobs(self) -> JobQueue: ...

    @property
    def search(self) -> SearchService: ...

    @property
    def collection(self) -> str: ...

    @property
    def reindexer(self) -> Reindexer: ...

    @property
    def registries(self) -> list[CollectorRegistry]: ...


class AdminRuntime(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def components(self) -> AdminComponents:
        """(unavailable) while the service starts or after it failed to."""

    def readiness(self) -> tuple[bool, dict[str, object]]: ...
