"""``python -m models.eval BUNDLE`` and ``clipsearch models eval BUNDLE``: one function for both.

:func:`eval_command` checks everything it can before the long run starts (every bundle loads and
verifies, every ``--baseline`` is ``NAME=DIR``), evaluates the bundle and each baseline on the same
scenes, writes ``eval.json`` + ``EVAL.md``, and returns the process exit code: 0 after a report was
written (whether or not the targets pass: the report says so), 1 for a bundle that is missing,
invalid or fails during the run, 2 for malformed arguments.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from service.core.bundle.manifest import load_bundle
from service.core.errors import ClipsearchError

logger = logging.getLogger(__name__)

_BASELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
EXIT_BUNDLE = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A malformed command-line argument."""


def parse_baselines(specs: list[str]) -> dict[str, Path]:
    """``["init=zoo/init", ...]`` -> ``{"init": Path("zoo/init")}``; raises :class:`UsageError`."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            raise UsageError(f"--baseline {spec!r} is malformed: expected NAME=BUNDLE_DIR")
        if not _BASELINE_NAME.match(name):
            raise UsageError(
                f"--baseline {spec!r}: NAME may use only letters, digits, '.', '_' and '-'"
            )
        if name in out:
            raise UsageError(f"--baseline NAME {name!r} is given twice")
        out[name] = Path(folder)
    return out


def _check_bundle(path: Path, what: str) -> str | None:
    """An error message when ``path`` is not a loadable, verified bundle, else None."""
    if not path.exists():
        return f"{what} {path} does not exist"
    if not path.is_dir():
        return f"{what} {path} is not a folder"
    try:
        load_bundle(path)
    except ClipsearchError as exc:
        return f"{what} is invalid: {exc.message}"
    return None


def bundles_ok(bundle: Path, baselines: dict[str, Path], say: Callable[[str], None]) -> bool:
    """Whether ``bundle`` and every baseline load and verify; each problem said."""
    problems = [_check_bundle(bundle, "bundle")]
    problems += [_check_bundle(p, f"baseline {name!r}") for name, p in baselines.items()]
    for problem in problems:
        if problem:
            say(f"error: {problem}")
    return not any(problems)


def eval_command(
    bundle: Path,
    n: int,
    out: Path | None,
    baselines: list[str],
    *,
    split: str = "test",
    seed_offset: int = 0,
    label: str | None = None,
    stream: TextIO | None = None,
) -> int:
    """Evaluate ``bundle`` (and baselines) on ``n`` scenes; write the report to ``out``.

    ``out`` defaults to the bundle folder, so ``EVAL.md`` ships beside ``manifest.json``.
    ``label`` names the evaluated bundle for what it is in the report (beside the baselines).
    Messages go to ``stream`` (stderr by default); the return value is the exit code.
    """
    stream = stream or sys.stderr

    def say(message: str) -> None:
        stream.write(message + "\n")
        stream.flush()

    try:
        named = parse_baselines(list(baselines))
        if n < 1:
            raise UsageError(f"--n must be at least 1, got {n}")
        if label is not None and (not label.strip() or "|" in label or "\n" in label):
            raise UsageError("--label must be one non-empty line without '|' (a table cell)")
    except UsageError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    bundle = Path(bundle)
    if not bundles_ok(bundle, named, say):
        return EXIT_BUNDLE

    from models.eval.runner import evaluate, write_report  # onnxruntime only when it runs

    try:
        result = evaluate(bundle, n_gallery=n, split=split, seed_offset=seed_offset, progress=say)
        base_results = {
            name: evaluate(path, n_gallery=n, split=split, seed_offset=seed_offset, progress=say)
            for name, path in named.items()
        }
    except (ClipsearchError, ValueError, RuntimeError) as exc:
        # onnxruntime raises RuntimeError subclasses for graphs that do not run.
        logger.debug("evaluation failed", exc_info=True)
        say(f"error: evaluation failed: {exc}")
        return EXIT_BUNDLE
    json_path, md_path = write_report(result, out or bundle, baselines=base_results, label=label)
    for t in result["targets"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[t["passed"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        say(f"  {verdict:4}  {t['label']}: {value} ({t['op']} {t['threshold']})")
    say(f"wrote {md_path} and {json_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.eval",
        description="Evaluate a model bundle on synthetic test scenes and write EVAL.md.",
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (with manifest.json)")
    parser.add_argument("--n", type=int, default=1000, help="gallery size (default 1000)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: bundle)")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=BUNDLE_DIR",
        help="also evaluate this bundle and show it as an extra column (repeatable)",
    )
    parser.add_argument("--split", default="test", help="scene split (default test)")
    parser.add_argument("--seed-offset", type=int, default=0, help="first scene index")
    parser.add_argument(
        "--label", default=None, help="what the evaluated bundle is, named in its report column"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return eval_command(
        args.bundle,
        args.n,
        args.out,
        args.baseline,
        split=args.split,
        seed_offset=args.seed_offset,
        label=args.label,
    )
