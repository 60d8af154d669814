"""The in-process encoder serves the configured bundle and the extra bundles beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipsearch.bootstrap import build_embedder
from service.clients.inprocess import InProcessEmbeddingClient
from service.core.config import EncoderSettings, Settings
from service.core.errors import ClipsearchError, ErrorType


def test_extra_bundles_are_served_beside_the_default(
    tiny_bundle_dir: Path,
    tiny_narrow_bundle_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIPSEARCH_ENCODER__EXTRA_BUNDLES", str(tiny_narrow_bundle_dir))
    settings = Settings(data_dir=tmp_path, bundle=str(tiny_bundle_dir))
    assert settings.encoder.extra_bundles == [str(tiny_narrow_bundle_dir)]
    embedder = build_embedder(settings)
    try:
        assert isinstance(embedder, InProcessEmbeddingClient) and embedder.ready()
        assert [b.ref for b in embedder.bundles()] == ["tiny-test@0.1.0", "tiny-narrow@0.1.0"]
        assert embedder.embed_texts(["a"]).joint.shape == (1, 64)
        assert embedder.embed_texts(["a"], bundle="tiny-narrow@0.1.0").joint.shape == (1, 32)
    finally:
        embedder.close()


@pytest.mark.parametrize("extra", ["no-such-bundle", "same"])
def test_a_bad_extra_bundle_fails_start_up_clearly(
    extra: str, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    name = str(tiny_bundle_dir) if extra == "same" else extra
    settings = Settings(
        data_dir=tmp_path,
        bundle=str(tiny_bundle_dir),
        encoder=EncoderSettings(extra_bundles=[name]),
    )
    with pytest.raises(ClipsearchError) as err:
        build_embedder(settings)
    if extra == "same":  # the same bundle twice
        assert err.value.type is ErrorType.conflict and "tiny-test@0.1.0" in err.value.message
    else:
        assert err.value.type is ErrorType.bundle_invalid and "no-such-bundle" in err.value.message
