"""What each served model says about itself: its manifest card's ``domain`` and
``intended_use``, shown by the start-up log, ``/health/ready``, ``GET /v1/collections`` and the
dashboard.

The encoder's listing (``info().bundles``) carries each bundle's domain and intended use, from
the in-process registry or from the remote workers' ``Info`` alike; a listing without them (an
older worker) falls back to the manifest of a bundle this process serves itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from service.clients.base import EmbeddingClient
from service.core.embeddings import ServedBundle


@dataclass(frozen=True)
class ModelCard:
    ref: str  # name@version
    name: str
    version: str
    provider: str
    domain: str | None
    intended_use: str | None
    trained: bool
    default: bool
    spaces: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        """One line for a log: ``scenes@2.0.0 (domain: ...; intended use: ...)``."""
        parts = [f"domain: {self.domain or 'not stated'}"]
        if self.intended_use:
            parts.append(f"intended use: {self.intended_use}")
        return f"{self.ref} ({'; '.join(parts)})"


def _manifest_card(embedder: EmbeddingClient, ref: str) -> Any:
    """The card of ``ref`` where this process holds its manifest (an in-process registry)."""
    registry = getattr(embedder, "registry", None)
    get = getattr(registry, "get", None)
    if get is None:
        return None
    try:
        return get(ref).engine.bundle.manifest.card
    except Exception:  # a bundle dropped meanwhile, or a registry of another shape
        return None


def served(embedder: EmbeddingClient) -> list[ModelCard]:
    """Every bundle ``embedder`` serves, default first, with what its card says."""
    info = embedder.info()
    listing: tuple[ServedBundle, ...] = info.bundles or (
        ServedBundle(
            ref=info.bundle,
            spaces=info.spaces,
            trained=info.trained,
            max_text_tokens=info.max_text_tokens,
            provider=info.provider,
            default=True,
        ),
    )
    cards = []
    for b in listing:
        card = _manifest_card(embedder, b.ref)
        domain = b.domain or (card.domain if card is not None else None)
        intended = b.intended_use or ((card.intended_use or None) if card is not None else None)
        cards.append(
            ModelCard(
                ref=b.ref,
                name=b.name,
                version=b.version,
                provider=b.provider or info.provider,
                domain=domain,
                intended_use=intended,
                trained=b.trained,
                default=b.default,
                spaces=dict(b.spaces),
            )
        )
    return cards


def by_ref(embedder: EmbeddingClient) -> dict[str, ModelCard]:
    return {c.ref: c for c in served(embedder)}
