"""Domain values to wire messages and back, shared by the worker and the gRPC client.

Vectors travel as one packed little-endian float32 matrix per batch: decoding is a single
``frombuffer`` and the values arrive bit-exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.core.domain import Lane
from service.core.embeddings import (
    EncoderHealth,
    EncoderInfo,
    ImageEmbedding,
    Label,
    ServedBundle,
    TextEmbeddings,
)
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.rpc.proto import encoder_pb2 as pb

WIRE_DTYPE = np.dtype("<f4")
LANES: dict[Lane, pb.Lane] = {"interactive": pb.LANE_INTERACTIVE, "bulk": pb.LANE_BULK}
_LANE_NAMES: dict[int, Lane] = {
    pb.LANE_UNSPECIFIED: "interactive",
    pb.LANE_INTERACTIVE: "interactive",
    pb.LANE_BULK: "bulk",
}

ImageResults = list[ImageEmbedding | ClipsearchError]


def lane_to_proto(lane: str) -> pb.Lane:
    try:
        return LANES[lane]  # type: ignore[index]
    except KeyError:
        raise invalid(f"unknown lane {lane!r}; expected one of {', '.join(LANES)}") from None


def lane_from_proto(value: int) -> Lane:
    try:
        return _LANE_NAMES[value]
    except KeyError:
        raise invalid(f"unknown lane {value}") from None


def _dumps(value: Any) -> str:
    return "" if value is None else json.dumps(value, default=str, sort_keys=True)


def _loads(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- vectors ---------------------------------------------------------------------------------


def encode_matrix(array: np.ndarray) -> pb.Matrix:
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {array.shape}")
    data = np.ascontiguousarray(array, dtype=WIRE_DTYPE).tobytes()
    return pb.Matrix(rows=array.shape[0], dim=array.shape[1], data=data)


def decode_matrix(matrix: pb.Matrix) -> np.ndarray:
    expected = matrix.rows * matrix.dim * WIRE_DTYPE.itemsize
    if len(matrix.data) != expected:
        raise ClipsearchError(
            ErrorType.internal,
            f"malformed matrix: {len(matrix.data)} bytes for {matrix.rows}x{matrix.dim} float32",
        )
    # astype copies into native float32: writable, like the in-process client's arrays.
    flat = np.frombuffer(matrix.data, dtype=WIRE_DTYPE).astype(np.float32)
    return flat.reshape(matrix.rows, matrix.dim)


# -- errors ----------------------------------------------------------------------------------


def error_to_proto(exc: ClipsearchError) -> pb.Error:
    return pb.Error(type=exc.type.value, message=exc.message, detail_json=_dumps(exc.detail))


def error_from_proto(error: pb.Error) -> ClipsearchError:
    try:
        type_ = ErrorType(error.type)
    except ValueError:
        type_ = ErrorType.internal  # a newer worker's type this client does not know
    return ClipsearchError(type_, error.message, _loads(error.detail_json))


# -- results ---------------------------------------------------------------------------------


def texts_to_proto(result: TextEmbeddings) -> pb.TextResult:
    message = pb.TextResult(
        joint=encode_matrix(result.joint), sentence=encode_matrix(result.sentence)
    )
    if result.tokens is not None:
        message.tokens.counts.extend(int(n) for n in result.tokens)
    return message


def texts_from_proto(message: pb.TextResult) -> TextEmbeddings:
    tokens = None
    if message.HasField("tokens"):
        tokens = np.asarray(message.tokens.counts, dtype=np.int32)
    return TextEmbeddings(
        joint=decode_matrix(message.joint),
        sentence=decode_matrix(message.sentence),
        tokens=tokens,
    )


def images_to_proto(
    results: Sequence[ImageEmbedding | ClipsearchError], dim: int, visual_dim: int | None = None
) -> pb.ImageResult:
    good = [r for r in results if not isinstance(r, ClipsearchError)]
    message = pb.ImageResult(
        vectors=encode_matrix(_rows([r.joint for r in good], dim)),
    )
    if visual_dim is not None:
        rows = [r.visual for r in good if r.visual is not None]
        message.visual.CopyFrom(encode_matrix(_rows(rows, visual_dim)))
    row = 0
    for result in results:
        if isinstance(result, ClipsearchError):
            message.items.append(pb.ImageItem(error=error_to_proto(result)))
            continue
        labels = [
            pb.Label(name=lb.name, score=lb.score, broader=list(lb.broader)) for lb in result.labels
        ]
        message.items.append(pb.ImageItem(row=row, labels=labels))
        row += 1
    return message


def _rows(rows: Sequence[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, dim), np.float32)


def images_from_proto(message: pb.ImageResult) -> ImageResults:
    vectors = decode_matrix(message.vectors)
    visual = decode_matrix(message.visual) if message.HasField("visual") else None
    out: ImageResults = []
    for item in message.items:
        if item.WhichOneof("result") == "error":
            out.append(error_from_proto(item.error))
        elif item.row < vectors.shape[0] and (visual is None or item.row < visual.shape[0]):
            labels = tuple(Label(lb.name, lb.score, tuple(lb.broader)) for lb in item.labels)
            out.append(
                ImageEmbedding(
                    joint=vectors[item.row],
                    visual=None if visual is None else visual[item.row],
                    labels=labels,
                )
            )
        else:
            out.append(ClipsearchError(ErrorType.internal, f"row {item.row} is not in the reply"))
    return out


# -- info and health -------------------------------------------------------------------------


def bundle_to_proto(bundle: ServedBundle) -> pb.BundleInfo:
    return pb.BundleInfo(
        name=bundle.name,
        version=bundle.version,
        spaces=bundle.spaces,
        trained=bundle.trained,
        max_text_tokens=bundle.max_text_tokens,
        provider=bundle.provider,
        domain=bundle.domain or "",
        is_default=bundle.default,
        intended_use=bundle.intended_use or "",
    )


def bundle_from_proto(message: pb.BundleInfo) -> ServedBundle:
    return ServedBundle(
        ref=f"{message.name}@{message.version}",
        spaces=dict(sorted(message.spaces.items())),
        trained=message.trained,
        max_text_tokens=message.max_text_tokens,
        provider=message.provider,
        domain=message.domain or None,
        default=message.is_default,
        intended_use=message.intended_use or None,
    )


def info_to_proto(info: EncoderInfo) -> pb.InfoResponse:
    return pb.InfoResponse(
        bundle=info.bundle,
        provider=info.provider,
        spaces=info.spaces,
        trained=info.trained,
        max_text_tokens=info.max_text_tokens,
        batching_json=_dumps(info.batching),
        bundles=[bundle_to_proto(b) for b in info.bundles],
    )


def info_from_proto(message: pb.InfoResponse) -> EncoderInfo:
    batching = _loads(message.batching_json)
    return EncoderInfo(
        bundle=message.bundle,
        provider=message.provider,
        spaces=dict(sorted(message.spaces.items())),
        trained=message.trained,
        max_text_tokens=message.max_text_tokens,
        batching=batching if isinstance(batching, dict) else {},
        bundles=tuple(bundle_from_proto(b) for b in message.bundles),
    )


def health_to_proto(
    health: EncoderHealth, bundle: str, bundles: Sequence[str] = ()
) -> pb.HealthResponse:
    return pb.HealthResponse(
        ready=health.ready,
        reason=health.reason or "",
        bundle=bundle,
        detail_json=_dumps(health.detail or None),
        bundles=list(bundles),
    )


def health_from_proto(message: pb.HealthResponse) -> EncoderHealth:
    detail = _loads(message.detail_json)
    return EncoderHealth(
        ready=message.ready,
        reason=message.reason or None,
        detail=detail if isinstance(detail, dict) else {},
    )
