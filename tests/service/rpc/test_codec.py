"""The wire codec: vectors bit-exact, per-item errors in place, info and health intact."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.embeddings import (
    EncoderHealth,
    EncoderInfo,
    ImageEmbedding,
    Label,
    TextEmbeddings,
)
from service.core.errors import ClipsearchError, ErrorType
from service.rpc import codec
from service.rpc.proto import encoder_pb2 as pb


def test_matrices_are_bit_exact_little_endian_float32() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    x[0, 0] = np.float32(np.nextafter(np.float32(1), np.float32(2)))
    message = codec.encode_matrix(x)
    assert (message.rows, message.dim, len(message.data)) == (5, 7, 5 * 7 * 4)
    assert message.data == x.astype("<f4").tobytes()
    back = codec.decode_matrix(pb.Matrix.FromString(message.SerializeToString()))
    np.testing.assert_array_equal(back, x)
    assert back.dtype == np.float32 and back.flags.writeable
    with pytest.raises(ClipsearchError, match="malformed"):
        codec.decode_matrix(pb.Matrix(rows=2, dim=2, data=b"\0" * 12))


def test_texts_carry_token_counts_when_known() -> None:
    joint, sentence = np.ones((2, 3), np.float32), np.zeros((2, 4), np.float32)
    with_tokens = TextEmbeddings(joint, sentence, np.asarray([3, 9], np.int32))
    back = codec.texts_from_proto(codec.texts_to_proto(with_tokens))
    assert back.tokens is not None and back.tokens.tolist() == [3, 9]
    assert (
        codec.texts_from_proto(codec.texts_to_proto(TextEmbeddings(joint, sentence))).tokens is None
    )


def test_images_keep_each_items_error_in_place() -> None:
    bad = ClipsearchError(ErrorType.unsupported_media, "not an image", {"index": 1})
    rows = [
        ImageEmbedding(np.full(3, 1, np.float32)),
        bad,
        ImageEmbedding(np.full(3, 2, np.float32)),
    ]
    message = codec.images_to_proto(rows, dim=3)
    assert message.vectors.rows == 2 and not message.HasField("visual")
    back = codec.images_from_proto(pb.ImageResult.FromString(message.SerializeToString()))
    for got, want in ((back[0], rows[0]), (back[2], rows[2])):
        assert isinstance(got, ImageEmbedding) and isinstance(want, ImageEmbedding)
        np.testing.assert_array_equal(got.joint, want.joint)
        assert got.visual is None and got.labels == ()
    err = back[1]
    assert isinstance(err, ClipsearchError)
    assert (err.type, err.message, err.detail) == (bad.type, bad.message, bad.detail)
    assert codec.images_from_proto(codec.images_to_proto([bad], dim=3))[0].type is bad.type  # type: ignore[union-attr]
    assert codec.images_from_proto(codec.images_to_proto([], dim=3)) == []


def test_images_carry_visual_features_and_labels() -> None:
    cat = (Label("tabby cat", 0.75, ("domestic cat", "cat")), Label("tiger cat", 0.125))
    rows: list[ImageEmbedding | ClipsearchError] = [
        ImageEmbedding(np.full(3, 1, np.float32), np.full(5, 3, np.float32), cat),
        ClipsearchError(ErrorType.invalid_input, "broken"),
        ImageEmbedding(np.full(3, 2, np.float32), np.full(5, 4, np.float32)),
    ]
    message = codec.images_to_proto(rows, dim=3, visual_dim=5)
    back = codec.images_from_proto(pb.ImageResult.FromString(message.SerializeToString()))
    first, last = back[0], back[2]
    assert isinstance(first, ImageEmbedding) and isinstance(last, ImageEmbedding)
    assert first.visual is not None and last.visual is not None
    np.testing.assert_array_equal(first.visual, np.full(5, 3, np.float32))
    np.testing.assert_array_equal(last.visual, np.full(5, 4, np.float32))
    assert first.labels == cat and last.labels == ()
    assert isinstance(back[1], ClipsearchError)


def test_info_health_and_lanes() -> None:
    info = EncoderInfo(
        "b@1", "CPUExecutionProvider", {"image": 4, "caption": 4}, True, 77, {"a": 1}
    )
    assert codec.info_from_proto(codec.info_to_proto(info)) == info
    health = EncoderHealth(False, "stuck", {"towers": {"image": "stuck"}})
    assert codec.health_from_proto(codec.health_to_proto(health, "b@1")) == health
    assert codec.health_from_proto(
        codec.health_to_proto(EncoderHealth(True), "b@1")
    ) == EncoderHealth(True)
    assert codec.lane_from_proto(pb.LANE_UNSPECIFIED) == "interactive"
    assert codec.lane_from_proto(codec.lane_to_proto("bulk")) == "bulk"
    for bad in (lambda: codec.lane_to_proto("fast"), lambda: codec.lane_from_proto(7)):
        with pytest.raises(ClipsearchError) as err:
            bad()
        assert err.value.type is ErrorType.invalid_input
