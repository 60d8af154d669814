"""What the bulk image session costs in memory (``encoder.bulk_sessions``): the encoder engine's
resident memory after a bulk batch of 64 images and interactive batches of 1 to 32, with one
image session for both lanes, with a bulk session beside it sharing the CPU arena (the default),
and with a bulk session and an arena each. Each setting runs in a fresh process (the shared arena
is process-wide). Writes ``bench-results/bulk_memory.json``. ::

    python -m loadtests.bench.bulk_memory --bundle models/zoo/photo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "one session": {"bulk_sessions": False},
    "bulk session, shared arena": {"bulk_sessions": True},
    "bulk session, an arena each": {"bulk_sessions": True, "separate_arenas": True},
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(bundle: Path, bulk_sessions: bool, separate_arenas: bool = False) -> dict[str, float]:
    """In this process: RSS after warm-up, after bulk batches of 64, after interactive 1..32."""
    import numpy as np

    import service.encoder.engine as engine_module
    from service.core.bundle.manifest import load_bundle
    from service.core.config import EncoderSettings, Settings
    from service.encoder.engine import EncoderEngine

    if separate_arenas:  # the ablation: the engine opens each session with its own arena
        original = engine_module.create_session

        def own_arena(*args: Any, **kwargs: Any) -> Any:
            return original(*args, **{**kwargs, "shared_arena": False})

        engine_module.create_session = own_arena  # type: ignore[assignment]
    settings = Settings(encoder=EncoderSettings(provider="cpu", bulk_sessions=bulk_sessions))
    engine = EncoderEngine(load_bundle(bundle), settings)
    engine.warmup()
    warm = rss_mb()
    size = engine.bundle.manifest.image_tower.image_size
    pixels = np.random.default_rng(0).random((64, 3, size, size), dtype=np.float32)
    for _ in range(3):
        engine.forward_images(pixels, "bulk")
    bulk = rss_mb()
    for n in (1, 4, 8, 16, 32):
        engine.forward_images(pixels[:n], "interactive")
    return {"warm_mb": round(warm), "after_bulk_mb": round(bulk), "after_both_mb": round(rss_mb())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench.bulk_memory", description=__doc__
    )
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "zoo" / "photo")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.bundle, **SETTINGS[args.child])))
        return 0
    result: dict[str, Any] = {"bundle": str(args.bundle)}
    for name in SETTINGS:
        command = [sys.executable, "-m", "loadtests.bench.bulk_memory"]
        done = subprocess.run(
            [*command, "--bundle", str(args.bundle), "--child", name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        result[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {result[name]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bulk_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
