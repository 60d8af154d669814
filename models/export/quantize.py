"""Compact storage for exported weights without changing what the graph computes.

The scheme is *round first, export second*: the PyTorch model's weights are rounded to what the
file will store (fp16 for matrices, int8 with one fp32 scale per row for the word-embedding
table), and that rounded model is both the parity reference and the thing that was trained
against. The ONNX graph is then exported in fp32 and its fp16-exact initializers are stored as
fp16 behind a ``Cast`` — a lossless change, so parity stays at the fp32 tolerance. ORT folds the
casts at session start, so inference runs at fp32 speed. (Fully fp16 graphs are not an option
on ORT CPU: they crash at ORT_ENABLE_ALL.)

Plain int8 dynamic quantisation of MiniLM's matrices costs too much accuracy (row cosine
0.90-0.99 against fp32), so only the embedding table, a lookup, is int8.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.train.minilm import MiniLM

logger = logging.getLogger(__name__)

FP16_MIN_ELEMENTS = 4096  # smaller tensors (biases, norms) are not worth a Cast node


class Int8Embedding(nn.Module):
    """Embedding lookup over an int8 table with a per-row fp32 scale (symmetric, 127 levels)."""

    table_q: torch.Tensor
    table_scale: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        self.register_buffer("table_q", torch.round(w / scale).clamp(-127, 127).to(torch.int8))
        self.register_buffer("table_scale", scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table_q[ids].to(torch.float32) * self.table_scale[ids]


def round_fp16_(module: nn.Module, *, min_elements: int = FP16_MIN_ELEMENTS) -> int:
    """Round every float parameter with >= min_elements entries to fp16 precision, in place."""
    count = 0
    with torch.no_grad():
        for param in module.parameters():
            if param.dtype == torch.float32 and param.numel() >= min_elements:
                param.copy_(param.half().float())
                count += param.numel()
    return count


def _is_fp16_exact(arr: np.ndarray) -> bool:
    if arr.dtype != np.float32 or not np.all(np.isfinite(arr)):
        return False
    return bool(np.array_equal(arr.astype(np.float16).astype(np.float32), arr))


def store_fp16(model: onnx.ModelProto, *, min_elements: int = FP16_MIN_ELEMENTS) -> int:
    """Store fp16-exact fp32 initializers as fp16 + Cast (lossless); returns bytes saved."""
    graph = model.graph
    casts: list[onnx.NodeProto] = []
    saved = 0
    kept: list[onnx.TensorProto] = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        arr = numpy_helper.to_array(init)
        if not _is_fp16_exact(arr):
            kept.append(init)
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(
            helper.make_node(
                "Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "__cast"
            )
        )
        saved += arr.nbytes // 2
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    logger.info("stored %d initializers as fp16 (%.1f MB saved)", len(casts), saved / 1e6)
    return saved


def compact_minilm(minilm: MiniLM) -> MiniLM:
    """A copy of MiniLM with the weights the bundle stores: int8 word table, fp16 matrices.

    Training caches sentence embeddings from this copy, so the joint space is learnt on exactly
    what the served graph computes.
    """
    model = copy.deepcopy(minilm).eval()
    weight = model.word.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError("MiniLM.word must be an embedding with a weight tensor")
    model.word = Int8Embedding(weight)
    round_fp16_(model)
    for param in model.parameters():
        param.requires_grad_(False)
    return model
