"""ONNX Runtime sessions with an explicit, logged execution-provider chain.

``auto`` tries TensorRT (fp16, engine cache) → CUDA → CPU, keeping only what this onnxruntime
build offers. An explicitly requested provider that is missing is an error, never a silent CPU
fallback; ``require_gpu`` turns a CPU-only result into an error as well. ONNX Runtime itself may
still fall back to CPU when a GPU provider fails to initialise (missing CUDA libraries), so the
provider is checked again on the created session.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime as ort

from service.core.config import EncoderSettings
from service.core.errors import ClipsearchError, ErrorType

logger = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})
_ORT_NAMES = {"tensorrt": TENSORRT, "cuda": CUDA, "cpu": CPU}

ProviderSpec = tuple[str, dict[str, str]]


def _tensorrt_options(settings: EncoderSettings) -> dict[str, str]:
    options = {"trt_fp16_enable": "True"}
    if settings.engine_cache_dir is not None:
        # Building TensorRT engines takes minutes; the cache makes restarts fast.
        cache = Path(settings.engine_cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        options |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    return options


def _unavailable(message: str, detail: Any = None) -> ClipsearchError:
    return ClipsearchError(ErrorType.unavailable, message, detail)


def provider_chain(settings: EncoderSettings, available: list[str]) -> list[ProviderSpec]:
    """The providers to hand to ONNX Runtime, best first (CPU always last as the fallback for
    nodes a GPU provider does not support)."""
    wanted = settings.provider
    if wanted == "auto":
        names = [TENSORRT, CUDA, CPU]
    else:
        first = _ORT_NAMES[wanted]
        if first not in available:
            raise _unavailable(
                f"execution provider {wanted!r} ({first}) is not available in this onnxruntime "
                f"build; available: {', '.join(available)}. Install onnxruntime-gpu for CUDA "
                "and TensorRT, or set CLIPSEARCH_ENCODER__PROVIDER=auto",
                {"requested": wanted, "available": available},
            )
        # TensorRT leaves unsupported subgraphs to CUDA rather than to CPU when it can.
        names = {TENSORRT: [TENSORRT, CUDA, CPU], CUDA: [CUDA, CPU], CPU: [CPU]}[first]
    chain: list[ProviderSpec] = []
    for name in names:
        if name in available or name == CPU:
            chain.append((name, _tensorrt_options(settings) if name == TENSORRT else {}))
    if settings.require_gpu and chain[0][0] not in GPU_PROVIDERS:
        raise _unavailable(
            "require_gpu is set but no GPU execution provider is available "
            f"(available: {', '.join(available)})",
            {"available": available},
        )
    return chain


def session_options(settings: EncoderSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    if settings.inter_op_threads:
        options.inter_op_num_threads = settings.inter_op_threads
    return options


def create_session(path: Path, settings: EncoderSettings) -> ort.InferenceSession:
    """Open ``path`` on the best provider the settings allow; log which one was chosen."""
    path = Path(path)
    chain = provider_chain(settings, ort.get_available_providers())
    try:
        session = ort.InferenceSession(
            str(path),
            sess_options=session_options(settings),
            providers=[name for name, _ in chain],
            provider_options=[options for _, options in chain],
        )
    except Exception as exc:  # ORT raises its own exception types for bad graphs and providers
        raise ClipsearchError(
            ErrorType.bundle_invalid, f"cannot load ONNX model {path.name}: {exc}"
        ) from exc
    chosen = session.get_providers()[0]
    if settings.provider != "auto" and chosen != chain[0][0]:
        raise _unavailable(
            f"execution provider {chain[0][0]} was requested but ONNX Runtime fell back to "
            f"{chosen} for {path.name} (see the onnxruntime log for why)",
            {"requested": chain[0][0], "chosen": chosen},
        )
    if settings.require_gpu and chosen not in GPU_PROVIDERS:
        raise _unavailable(
            f"require_gpu is set but ONNX Runtime fell back to {chosen} for {path.name}",
            {"chosen": chosen},
        )
    logger.info(
        "onnxruntime session for %s on %s (requested %s, chain %s)",
        path.name,
        chosen,
        settings.provider,
        [name for name, _ in chain],
    )
    return session
