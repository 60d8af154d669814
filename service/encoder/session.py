"""ONNX Runtime sessions with an explicit, logged execution-provider chain.

``auto`` tries TensorRT (fp16, engine cache) → CUDA → CPU, keeping only what this onnxruntime
build offers. An explicitly requested provider that is missing is an error, never a silent CPU
fallback; ``require_gpu`` turns a CPU-only result into an error as well. ONNX Runtime itself may
still fall back to CPU when a GPU provider fails to initialise (missing CUDA libraries), so the
provider is checked again on the created session.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
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
# Per input: the shape at the profile's MIN, OPT and MAX batch (other axes fixed by the caller).
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def batch_profile(settings: EncoderSettings, shapes: dict[str, tuple[int, ...]]) -> Profile:
    """A TensorRT optimisation profile over the batch axis: ``shapes`` gives each input's shape
    without the batch axis at its largest (an image's 3xSxS; a text's max tokens). Texts get
    sequence 1 at MIN, the maximum at MAX and a typical query (a quarter of it) at OPT."""
    lo, opt, hi = (int(v) for v in settings.trt_batch.split(":"))
    profile: Profile = {}
    for name, rest in shapes.items():
        if len(rest) == 1:  # [batch, seq]
            seq = rest[0]
            profile[name] = ((lo, 1), (opt, max(1, seq // 4)), (hi, seq))
        else:
            profile[name] = ((lo, *rest), (opt, *rest), (hi, *rest))
    return profile


def _shapes(profile: Profile, which: int) -> str:
    return ",".join(f"{n}:{'x'.join(map(str, s[which]))}" for n, s in profile.items())


def _tensorrt_options(settings: EncoderSettings, profile: Profile | None = None) -> dict[str, str]:
    options = {"trt_fp16_enable": "True"}
    if profile:
        # Without an explicit profile TensorRT rebuilds an engine for every new input shape.
        options |= {
            "trt_profile_min_shapes": _shapes(profile, 0),
            "trt_profile_opt_shapes": _shapes(profile, 1),
            "trt_profile_max_shapes": _shapes(profile, 2),
        }
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


def provider_chain(
    settings: EncoderSettings, available: list[str], profile: Profile | None = None
) -> list[ProviderSpec]:
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
            chain.append((name, _tensorrt_options(settings, profile) if name == TENSORRT else {}))
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
    if not settings.spin_wait:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


_shared_arena_lock = threading.Lock()
_shared_arena = False


def _share_cpu_arena() -> None:
    """Register the process's one shared CPU arena with ONNX Runtime (once)."""
    global _shared_arena
    with _shared_arena_lock:
        if not _shared_arena:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(info, ort.OrtArenaCfg({}))
            _shared_arena = True


def create_session(
    path: Path,
    settings: EncoderSettings,
    profile: Profile | None = None,
    *,
    shared_arena: bool = False,
) -> ort.InferenceSession:
    """Open ``path`` on the best provider the settings allow; log which one was chosen.

    ``shared_arena``: CPU working memory comes from one arena shared by every session opened
    so, instead of an arena per session, which grows to its own largest batch and never
    shrinks: two sessions of one model that never run at once (an image tower's interactive
    and bulk sessions) then hold the memory of one (``python -m loadtests.bench.bulk_memory``:
    the photo bundle's engine after a batch of 64 and batches up to 32, 1,270 MB with an arena
    each, 948 MB shared, 894 MB with one image session)."""
    path = Path(path)
    chain = provider_chain(settings, ort.get_available_providers(), profile)
    options = session_options(settings)
    if shared_arena:
        _share_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    try:
        session = ort.InferenceSession(
            str(path),
            sess_options=options,
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


def run_bound(
    session: ort.InferenceSession, outputs: list[str], feeds: dict[str, Any]
) -> list[np.ndarray]:
    """``session.run`` through io-binding: inputs copied to the device once, outputs allocated
    on it by ORT and copied back once — no per-run host staging of the outputs."""
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for name in outputs:
        binding.bind_output(name, "cuda")
    session.run_with_iobinding(binding)
    return [value.numpy() for value in binding.get_outputs()]


def on_gpu(session: ort.InferenceSession) -> bool:
    return session.get_providers()[0] in GPU_PROVIDERS
