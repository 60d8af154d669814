"""Models tell the truth about themselves: the zoo's demo bundle says what it is, and every served
bundle's card (domain, intended use) is read back by name@version."""

from __future__ import annotations

from pathlib import Path

from service.admin.cards import by_ref, served
from service.clients.inprocess import InProcessEmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.config import Settings
from service.encoder.engine import EncoderEngine
from service.encoder.registry import BundleRegistry
from tests.service.admin.conftest import CARD, carded_bundle

ZOO = Path(__file__).resolve().parents[3] / "models" / "zoo"


def test_the_demo_bundle_says_it_is_a_demo_that_does_not_understand_photographs() -> None:
    card = load_bundle(ZOO / "scenes").manifest.card  # every file's sha256 still checks
    assert card is not None
    assert "demo" in card.domain
    assert "synthetic" in card.domain
    assert "does not understand photographs" in card.domain
    assert "clipsearch models export" in card.intended_use
    assert "/v1/admin/reindex" in card.intended_use


def test_served_bundles_carry_their_cards_default_first(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    settings = Settings(data_dir=tmp_path)
    registry = BundleRegistry(settings)
    registry.add(
        EncoderEngine(load_bundle(carded_bundle(tiny_bundle_dir, tmp_path / "t")), settings)
    )
    registry.add(EncoderEngine(load_bundle(tiny_narrow_bundle_dir), settings))
    client = InProcessEmbeddingClient(registry=registry)
    try:
        cards = served(client)
        assert [c.ref for c in cards] == ["tiny-test@0.1.0", "tiny-narrow@0.1.0"]
        first, second = cards
        assert first.default and not second.default
        assert (first.domain, first.intended_use) == (CARD["domain"], CARD["intended_use"])
        narrow = load_bundle(tiny_narrow_bundle_dir).manifest.card
        assert narrow is not None
        assert second.domain == narrow.domain
        assert second.intended_use == (narrow.intended_use or None)
        assert first.summary == (
            f"tiny-test@0.1.0 (domain: {CARD['domain']}; intended use: {CARD['intended_use']})"
        )
        assert second.summary.startswith(f"tiny-narrow@0.1.0 (domain: {narrow.domain}")
        assert second.spaces["image"] == 32 and first.spaces["image"] == 64
        assert set(by_ref(client)) == {"tiny-test@0.1.0", "tiny-narrow@0.1.0"}
    finally:
        client.close()
