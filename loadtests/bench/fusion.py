"""What fusion costs per fused search (``service.search.fusion.fuse``), in this process: 150
candidates (3 channels x ``SCALE_HITS``, a page of 10 in ``auto``), each channel's cosines as the
embedded store returns them, a fifth of the descriptions generated, with and without ``explain``.
Writes ``bench-results/fusion.json``. ::

    python -m loadtests.bench.fusion
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import numpy as np

from service.core.domain import Record, VectorName
from service.search.fusion import SCALE_HITS, ChannelScale, fuse

ROOT = Path(__file__).resolve().parents[2]
CHANNELS: tuple[VectorName, ...] = ("image", "caption", "description")


def measure(candidates: int, rounds: int) -> dict[str, float]:
    """Milliseconds per ``fuse`` call, best of three runs of ``rounds`` each."""
    rng = np.random.default_rng(0)
    records = [
        Record(str(uuid.UUID(int=i)), {"description_generated": i % 5 == 0}, {})
        for i in range(candidates)
    ]
    queries: dict[VectorName, list[float]] = {c: [1.0] for c in CHANNELS}
    # Each candidate has two of the three channels, as a mixed collection's items do.
    sims: dict[VectorName, dict[str, float]] = {
        c: {r.id: float(rng.normal(0.1, 0.1)) for j, r in enumerate(records) if (j + k) % 3}
        for k, c in enumerate(CHANNELS)
    }
    null: dict[VectorName, ChannelScale] = {c: ChannelScale(0.05, 0.05) for c in CHANNELS}
    weights: dict[VectorName, float] = dict.fromkeys(CHANNELS, 1.0)
    out: dict[str, float] = {}
    for label, explain in (("explain_ms", True), ("no_explain_ms", False)):
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(rounds):
                fuse(
                    records,
                    queries,
                    weights,
                    null=null,
                    depth=SCALE_HITS,
                    sims=sims,
                    explain=explain,
                )
            runs.append((time.perf_counter() - started) / rounds * 1000)
        out[label] = round(min(runs), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=3 * SCALE_HITS)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    result = {"candidates": args.candidates, **measure(args.candidates, args.rounds)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"fuse over {args.candidates} candidates: {result['explain_ms']:.3f} ms with explain, "
        f"{result['no_explain_ms']:.3f} ms without"
    )


if __name__ == "__main__":
    main()
