"""``clipsearch models eval-search BUNDLE``: the mixed-kind search evaluation of a bundle.

Checks what it can before the run (the bundle loads and verifies, the photo corpus assembles),
then evaluates on a gateway of its own and writes ``search-eval.json`` + ``SEARCH-EVAL.md``. The
gateway comes from the caller (``gateway(bundle, data_dir, allowed)``, a context manager yielding
an HTTP client, that may read the video files under ``allowed``): ``models`` may not import the
service, and the composition root builds a real one. Exit codes follow ``models.eval.cli``: 0
after a report (targets met or not), 1 for a bundle, corpus or run that fails.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TextIO

from models.eval.cli import EXIT_BUNDLE, bundles_ok
from models.eval.photos.api import ApiError, HttpClient
from models.eval.photos.corpus import ALL_SOURCES, DEFAULT_CACHE, CorpusUnavailable, assemble

logger = logging.getLogger(__name__)

Gateway = Callable[[Path, Path, Path], AbstractContextManager[HttpClient]]
COMMAND = "make eval-search"


def eval_search_command(
    bundle: Path,
    out: Path | None,
    cache: Path | None,
    *,
    gateway: Gateway,
    stream: TextIO | None = None,
) -> int:
    """Evaluate ``bundle``; write the report into ``out`` (default: the bundle folder)."""
    stream = stream or sys.stderr

    def say(message: str) -> None:
        stream.write(message + "\n")
        stream.flush()

    bundle = Path(bundle)
    if not bundles_ok(bundle, {}, say):
        return EXIT_BUNDLE
    try:
        corpus = assemble(cache or DEFAULT_CACHE, ALL_SOURCES, progress=say)
    except CorpusUnavailable as exc:
        say(f"error: the photo corpus is unavailable: {exc}")
        return EXIT_BUNDLE

    from models.eval.photos.runner import corpus_images
    from models.eval.search.report import render
    from models.eval.search.runner import evaluate_search, targets
    from models.eval.search.testset import build_testset
    from models.eval.search.video import VideoUnavailable

    with tempfile.TemporaryDirectory(prefix="clipsearch-search-eval-") as tmp:
        root = Path(tmp)
        testset = build_testset(corpus_images(corpus), root / "scenes")
        videos = root / "videos"
        videos.mkdir()
        try:
            with gateway(bundle, root / "gateway", videos) as client:
                result = evaluate_search(client, testset, videos, progress=say)
        except (ApiError, OSError, VideoUnavailable) as exc:
            logger.debug("search evaluation failed", exc_info=True)
            say(f"error: the search evaluation failed: {exc}")
            return EXIT_BUNDLE
    folder = Path(out or bundle)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "search-eval.json", folder / "SEARCH-EVAL.md"
    json_path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    md_path.write_text(render(result, bundle.name or str(bundle), COMMAND), encoding="utf-8")
    check = targets(result["summary"]["test"])
    for name, c in {**check["per_kind"], **check["overall"]}.items():
        say(f"  {'pass' if c['met'] else 'FAIL'} {name}: auto {c['auto']}")
    say(f"wrote {md_path} and {json_path}")
    return 0
