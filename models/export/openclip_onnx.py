"""OpenCLIP towers as ONNX graphs: the torch wrappers, the dynamo export, and precision variants.

The text wrapper re-states OpenCLIP's ``encode_text`` with the sequence length taken from the
input: ``open_clip`` adds the whole positional table and the full causal mask, so its graph
would only accept ``context_length`` tokens. With a causal mask and end-of-text pooling, tokens
after the end-of-text token cannot change the pooled vector, so a batch padded to its longest
text gives the same embeddings as one padded to the context length, and short queries run
several times faster. A tower without a causal mask (MobileCLIP's text encoder) or with another
pooling sees the padding; for those the graph pads ``input_ids`` to the context length itself,
so the inputs stay dynamic and the output stays exact.

Only ``torch.onnx.export(..., dynamo=True)`` keeps the sequence axis symbolic here (the
TorchScript exporter bakes the slice lengths in).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

OPSET = 18  # ONNX Runtime and TensorRT 10 parse it; opset 20's fused Gelu would buy nothing
# Graphs of this size or more keep their weights in a side file (protobuf's 2 GiB limit).
EXTERNAL_DATA_BYTES = 1_800_000_000
# fp16 variant: initializers with at least this many elements are stored in half precision.
FP16_MIN_ELEMENTS = 256
_DYNAMIC_POOLS = frozenset({"argmax", "eos", "first"})  # unaffected by trailing padding
_POOLS = _DYNAMIC_POOLS | {"last"}


class UnsupportedModel(ValueError):
    """The OpenCLIP model has a text tower this exporter does not handle."""


class ImageTower(nn.Module):
    """pixel_values [batch, 3, S, S] → L2-normalised image embeddings, as ``encode_image``."""

    def __init__(self, model: Any) -> None:  # an open_clip CLIP / CustomTextCLIP
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values, normalize=True)


class TextTower(nn.Module):
    """input_ids [batch, seq ≤ context] → L2-normalised text embeddings, as ``encode_text``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        # CLIP keeps the text modules on the model itself; CustomTextCLIP in ``model.text``.
        tower: Any = getattr(model, "text", model)
        if not hasattr(tower, "token_embedding"):
            raise UnsupportedModel(
                f"text tower {type(tower).__name__} is not OpenCLIP's TextTransformer (Hugging "
                "Face text encoders such as SigLIP's need their own tokenizer); not supported"
            )
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            raise UnsupportedModel("text towers with a CLS token or a padding mask (CoCa-style)")
        self.token_embedding: nn.Embedding = tower.token_embedding
        self.positional_embedding: torch.Tensor = tower.positional_embedding
        self.transformer: nn.Module = tower.transformer
        self.ln_final: nn.Module = tower.ln_final
        self.text_projection: nn.Linear | torch.Tensor | None = tower.text_projection
        self.pool_type: str = getattr(tower, "pool_type", None) or model.text_pool_type
        if self.pool_type not in _POOLS:
            raise UnsupportedModel(f"text pooling {self.pool_type!r}")
        self.eos_id = getattr(tower, "eos_id", None) or getattr(model, "text_eos_id", None)
        self.context_length = int(self.positional_embedding.shape[0])
        attn_mask = getattr(tower, "attn_mask", None)
        self.attn_mask: torch.Tensor | None
        self.register_buffer("attn_mask", attn_mask, persistent=False)
        self.pad_to_context = attn_mask is None or self.pool_type not in _DYNAMIC_POOLS

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.pad_to_context:
            input_ids = F.pad(input_ids, (0, self.context_length - input_ids.shape[1]))
        seq = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:seq]
        mask = None if self.attn_mask is None else self.attn_mask[:seq, :seq]
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        if self.pool_type == "argmax":  # the end-of-text token has the highest id
            pooled = x[torch.arange(x.shape[0]), input_ids.argmax(dim=-1)]
        elif self.pool_type == "eos":
            index = (input_ids == int(self.eos_id or 0)).int().argmax(dim=-1)
            pooled = x[torch.arange(x.shape[0]), index]
        elif self.pool_type == "first":
            pooled = x[:, 0]
        else:  # "last", on input padded to the context
            pooled = x[:, -1]
        if isinstance(self.text_projection, nn.Linear):
            pooled = self.text_projection(pooled)
        elif self.text_projection is not None:
            pooled = pooled @ self.text_projection
        return F.normalize(pooled, dim=-1)


def _dynamo_export(
    module: nn.Module,
    example: torch.Tensor,
    dynamic: dict[int, Any],
    input_name: str,
    output_name: str,
) -> onnx.ModelProto:
    module.eval()
    # The exporter reports progress on stdout even with verbose=False on some versions.
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            None,
            dynamo=True,
            verbose=False,
            opset_version=OPSET,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=(dynamic,),
            external_data=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def export_image_tower(model: Any, image_size: int) -> onnx.ModelProto:
    example = torch.randn(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch")
    return _dynamo_export(ImageTower(model), example, {0: batch}, "pixel_values", "image_embeds")


def export_text_tower(model: Any, sentence_output: str) -> onnx.ModelProto:
    """input_ids [batch, seq] → text_embeds, plus ``sentence_output`` (an Identity of it)."""
    tower = TextTower(model)
    ctx = tower.context_length
    # An example shorter than the context and with batch > 1, so neither axis specialises.
    vocab = int(tower.token_embedding.num_embeddings)
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(1, vocab - 1, (2, min(ctx, 8)), generator=generator)
    example[:, -1] = vocab - 1  # the end-of-text token, the highest id
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=ctx)}
    graph = _dynamo_export(tower, example, dims, "input_ids", "text_embeds")
    return add_identity_output(graph, "text_embeds", sentence_output)


def add_identity_output(model: onnx.ModelProto, source: str, name: str) -> onnx.ModelProto:
    """A second graph output equal to ``source`` (one forward serves two manifest spaces)."""
    [out] = [o for o in model.graph.output if o.name == source]
    model.graph.node.append(helper.make_node("Identity", [source], [name], name=f"{name}_id"))
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(out)
    copy.name = name
    model.graph.output.append(copy)
    return model


def fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store large float32 initializers as float16 behind a Cast to float32.

    The file halves; ONNX Runtime folds the Casts when it loads the graph, so it computes in
    float32 at full speed. (A graph computing in float16 throughout crashes ONNX Runtime's CPU
    provider at ORT_ENABLE_ALL, and would be slower on CPU anyway.)
    """
    casts = []
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < FP16_MIN_ELEMENTS:
            continue
        name = init.name
        half = numpy_helper.from_array(
            numpy_helper.to_array(init).astype(np.float16), name + "_fp16"
        )
        init.CopyFrom(half)
        casts.append(
            helper.make_node(
                "Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT, name=name + "_cast"
            )
        )
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)
    return model


def int8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weight-only int8: MatMul weights as 8-bit blocks (``MatMulNBits``), the rest as fp16.

    Activations stay float32, so the embeddings keep a row cosine above 0.9998 to the fp32
    model. (Dynamic int8, which also quantises activations, measured 0.9935 on a ViT-B-32 image
    tower: below the parity gate. See :func:`dynamic_int8`.) The file is about a third of fp32
    and the weights stay packed in memory; on CPUs it runs somewhat slower than fp32.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model, bits=8, block_size=32, is_symmetric=True, op_types_to_quantize=("MatMul",)
    )
    quantizer.process()
    return fp16_weights(quantizer.model.model)


def dynamic_int8(model: onnx.ModelProto, path: Path) -> list[str]:
    """ONNX Runtime's dynamic int8 quantization of the MatMuls (per-channel weights, activations
    quantised per tensor at run time): about 2x faster on CPU, less exact (see int8_weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model,
        path,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        extra_options={"MatMulConstBOnly": True},
    )
    return [path.name]


def save_onnx(model: onnx.ModelProto, path: Path) -> list[str]:
    """Write ``model``; returns the file names written (a side file for very large graphs)."""
    if model.ByteSize() < EXTERNAL_DATA_BYTES:
        onnx.checker.check_model(model)
        path.write_bytes(model.SerializeToString())
        return [path.name]
    data = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, location=data)
    onnx.checker.check_model(str(path))
    return [path.name, data]
