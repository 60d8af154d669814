"""The in-process client satisfies the EmbeddingClient protocol on the real tiny bundle."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from models.data.scenes import generate_scenes
from service.clients.base import EmbeddingClient, EncoderInfo, TextEmbeddings
from service.clients.inprocess import InProcessEmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.engine import EncoderEngine


@pytest.fixture
def client(tiny_bundle_dir: Path) -> InProcessEmbeddingClient:
    return InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), Settings()))


def test_protocol_types_and_readiness(client: InProcessEmbeddingClient) -> None:
    assert isinstance(client, EmbeddingClient)
    assert not client.ready()
    client.warmup()
    assert client.ready()
    info = client.info()
    assert isinstance(info, EncoderInfo) and info.bundle == "tiny-test@0.1.0"
    client.close()
    assert not client.ready()
    with pytest.raises(ClipsearchError) as exc:
        client.embed_texts(["a red circle"])
    assert exc.value.type is ErrorType.unavailable


def test_embeddings_match_the_engine_on_both_lanes(client: InProcessEmbeddingClient) -> None:
    texts = ["a red circle", "a small blue square"]
    direct = client.engine.embed_texts(texts)
    for lane in ("interactive", "bulk"):
        out = client.embed_texts(texts, lane=lane)  # type: ignore[arg-type]
        assert isinstance(out, TextEmbeddings)
        np.testing.assert_allclose(out.joint, direct.joint, atol=1e-6)
        np.testing.assert_allclose(out.sentence, direct.sentence, atol=1e-6)

    buf = io.BytesIO()
    generate_scenes(1, seed=2)[0].image.save(buf, format="PNG")
    vec, err = client.embed_images([buf.getvalue(), b"nope"], lane="bulk")
    assert isinstance(vec, np.ndarray) and vec.shape == (64,)
    assert isinstance(err, ClipsearchError) and err.type is ErrorType.unsupported_media
    with pytest.raises(ClipsearchError, match="is empty"):
        client.embed_texts([" "])
