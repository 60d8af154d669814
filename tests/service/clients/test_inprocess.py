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


def test_several_bundles_each_request_by_the_bundle_it_names(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    from service.encoder.registry import BundleRegistry

    registry = BundleRegistry(Settings())
    registry.add(EncoderEngine(load_bundle(tiny_bundle_dir), registry.settings))
    registry.add(EncoderEngine(load_bundle(tiny_narrow_bundle_dir), registry.settings))
    client = InProcessEmbeddingClient(registry=registry)
    client.warmup()
    assert client.ready() and isinstance(client, EmbeddingClient)
    texts = ["a red circle", "a small blue square"]
    buf = io.BytesIO()
    generate_scenes(1, seed=2)[0].image.save(buf, format="PNG")
    for ref, folder, dim in (
        ("tiny-test@0.1.0", tiny_bundle_dir, 64),
        ("tiny-narrow@0.1.0", tiny_narrow_bundle_dir, 32),
    ):
        alone = EncoderEngine(load_bundle(folder), Settings())
        out = client.embed_texts(texts, bundle=ref)
        np.testing.assert_allclose(out.joint, alone.embed_texts(texts).joint, atol=1e-6)
        [vec] = client.embed_images([buf.getvalue()], lane="bulk", bundle=ref)
        [want] = alone.embed_images([buf.getvalue()])
        assert isinstance(vec, np.ndarray) and vec.shape == (dim,)
        np.testing.assert_allclose(vec, want, atol=1e-6)  # type: ignore[arg-type]
        [encoded] = client.encode_images([buf.getvalue()], bundle=ref)
        assert not isinstance(encoded, ClipsearchError) and encoded.joint.shape == (dim,)
        assert client.info(bundle=ref).spaces["image"] == dim
        assert client.count_tokens("a red circle", bundle=ref) > 0
    # No bundle named: the default (the first added).
    assert client.embed_texts(texts).joint.shape == (2, 64)
    assert client.info().bundle == "tiny-test@0.1.0"
    assert [b.ref for b in client.bundles()] == ["tiny-test@0.1.0", "tiny-narrow@0.1.0"]
    with pytest.raises(ClipsearchError) as exc:
        client.embed_texts(texts, bundle="nope@1")
    assert exc.value.type is ErrorType.not_found and "tiny-narrow@0.1.0" in exc.value.message
    client.drop_bundle("tiny-narrow@0.1.0")
    with pytest.raises(ClipsearchError) as exc:
        client.embed_images([buf.getvalue()], bundle="tiny-narrow@0.1.0")
    assert exc.value.type is ErrorType.not_found
    served = client.add_bundle(load_bundle(tiny_narrow_bundle_dir))  # back, at run time
    assert served.ref == "tiny-narrow@0.1.0" and served.spaces["image"] == 32
    assert client.embed_texts(texts, bundle=served.ref).joint.shape == (2, 32)
    client.close()
    with pytest.raises(ClipsearchError) as exc:
        client.embed_texts(texts, bundle=served.ref)
    assert exc.value.type is ErrorType.unavailable
