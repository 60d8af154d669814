"""Command bodies for ``clipsearch models export`` and ``clipsearch models build-engine``.

Plain functions over already-parsed options that return an exit code: 0 done, 1 the model
failed (parity, build), 2 bad input (unknown architecture, missing checkpoint, malformed
``--batch``, missing dependency). Messages go to stderr; the path written goes to stdout.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from models.export.parity import ParityError
from service.core.errors import ClipsearchError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def export_command(
    *,
    arch: str,
    pretrained: str | None,
    out: Path,
    precision: str = "fp32",
    context_length: int | None = None,
    name: str | None = None,
) -> int:
    """Export an OpenCLIP model to a bundle folder (written only if parity passes)."""
    if precision not in PRECISIONS:
        return _fail(2, f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if context_length is not None and context_length < 2:
        return _fail(2, f"--context-length must be at least 2, not {context_length}")
    try:
        import open_clip  # noqa: F401  (torch alone is not enough: open_clip needs torchvision)

        from models.export.openclip import UnknownArch, export_openclip
        from models.export.openclip_onnx import UnsupportedModel
    except ImportError as exc:
        return _fail(
            2,
            f"model export needs torch and open_clip ({exc.name} is missing): create the export "
            "venv with scripts/export-venv.sh and run it from .venv-export",
        )
    try:
        path = export_openclip(
            arch,
            pretrained,
            Path(out),
            precision=precision,  # type: ignore[arg-type]
            context_length=context_length,
            name=name,
        )
    except (UnknownArch, UnsupportedModel, FileNotFoundError, FileExistsError) as exc:
        return _fail(2, str(exc))
    except ValueError as exc:  # a pretrained value that is neither a tag nor a file
        return _fail(2, str(exc))
    except ParityError as exc:
        return _fail(1, f"{exc}; no bundle was written")
    except RuntimeError as exc:  # open_clip: weights that cannot be fetched or loaded
        return _fail(1, f"cannot create {arch} ({pretrained}): {exc}")
    sys.stdout.write(f"{path}\n")
    return 0


def build_engine_command(*, bundle: Path, fp16: bool = True, batch: str = "1:16:64") -> int:
    """Build and verify TensorRT engines for every tower of ``bundle``."""
    from models.export.tensorrt import build_engines, parse_batch

    try:
        sizes = parse_batch(batch)
    except ValueError as exc:
        return _fail(2, str(exc))
    if not Path(bundle).is_dir():
        return _fail(2, f"bundle folder not found: {bundle}")
    try:
        out = build_engines(Path(bundle), fp16=fp16, batch=sizes)
    except ModuleNotFoundError as exc:
        return _fail(2, str(exc))
    except ClipsearchError as exc:  # an invalid bundle
        return _fail(2, exc.message)
    except (ValueError, FileExistsError) as exc:
        return _fail(2, str(exc))
    except ParityError as exc:
        return _fail(1, f"{exc}; the engines were not kept")
    except RuntimeError as exc:  # parse or build failure, no GPU
        return _fail(1, str(exc))
    sys.stdout.write(f"{out}\n")
    return 0
