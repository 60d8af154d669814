"""Client-side interfaces used by the gateway and the indexer.

``EmbeddingClient`` hides whether the encoder runs in-process or behind gRPC workers;
``JobQueue`` hides whether ingestion jobs run on the in-process runner or on Celery (both in
``indexer.jobs``); ``PointsWriter`` is what the gateway sees of the writer it may run. They are
synchronous and thread-safe so that the same pipeline functions run in a Celery worker and in
the gateway's thread pool. The gateway reaches ingestion only through these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from service.core.domain import Lane
from service.core.embeddings import EncoderHealth, EncoderInfo, ImageEmbedding, TextEmbeddings
from service.core.errors import ClipsearchError

__all__ = [
    "EmbeddingClient",
    "EncoderHealth",
    "EncoderInfo",
    "ImageEmbedding",
    "JobQueue",
    "PointsWriter",
    "TextEmbeddings",
]


@runtime_checkable
class EmbeddingClient(Protocol):
    """Every call takes an optional ``bundle`` (``name@version``): the bundle to embed with, of
    those the encoder serves (``info().bundles``); ``None`` = the default bundle. An unknown
    bundle raises ClipsearchError(not_found) naming the bundles served."""

    def info(self, *, bundle: str | None = None) -> EncoderInfo:
        """The bundle's (default: the default bundle's) info; ``bundles`` lists all served."""

    def embed_texts(
        self, texts: Sequence[str], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> TextEmbeddings:
        """Embed texts; raises ClipsearchError(invalid_input) for empty or over-long text,
        (overloaded) when the lane is full, (timeout) past the deadline."""

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[np.ndarray | ClipsearchError]:
        """Embed encoded images (PNG, JPEG, ...). Each item yields its L2-normalised joint-space
        (``image``) vector or its own error (corrupt, unsupported, too many pixels): one bad item
        fails alone."""

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[ImageEmbedding | ClipsearchError]:
        """As :meth:`embed_images`, with everything the image tower says of each image: its
        ``visual`` vector and top class ``labels`` where the bundle has them."""

    def ready(self) -> bool: ...

    def health(self) -> EncoderHealth:
        """``ready`` plus the reason when not (core stage failed or stuck, worker unreachable)."""

    def close(self) -> None: ...


@runtime_checkable
class JobQueue(Protocol):
    def submit(self, kind: str, params: dict[str, Any]) -> str:
        """Start a job; returns its id at once."""

    def status(self, job_id: str) -> dict[str, Any]:
        """``{"id","kind","state","total","done","failed","errors":[{"item","reason"}],...}``;
        raises ClipsearchError(not_found) for an unknown id."""

    def list_jobs(
        self, *, limit: int, offset: int, where: Callable[[str | None], bool] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of jobs, newest first (by ``created_at``), each as ``status`` gives it;
        and how many jobs there are in all. ``where``: only the jobs whose collection it
        admits (None: every job), counted in the total as well."""

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a queued or running job; its status. (conflict) once it has ended."""

    def retry_failed(self, job_id: str) -> str:
        """A new job over the failed entries of an ended job; its id."""

    def retry(self, job_id: str) -> str:
        """Resume an interrupted, failed or cancelled job under the same id, skipping items
        already indexed with the same content sha256; its id. (conflict) for any other state."""

    def ready(self) -> bool:
        """False once the runner can no longer run jobs (its thread died, its broker is gone)."""

    def close(self) -> None: ...


class WriterHealth(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...


@runtime_checkable
class PointsWriter(Protocol):
    """The points writer a gateway runs when indexer workers feed its store (a broker is set):
    the gateway reports its health and stops it, nothing more."""

    def health(self) -> WriterHealth:
        """``ready`` false, with the reason, while it cannot write (store or Redis down)."""

    def close(self) -> None: ...
