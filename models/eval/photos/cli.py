"""``clipsearch models eval-photos BUNDLE``: the real-photo evaluation of a bundle and baselines.

:func:`eval_photos_command` checks what it can before the long run (every bundle loads and
verifies, every ``--baseline`` is ``NAME=DIR``, the corpus assembles), then evaluates each bundle
on a gateway of its own and writes ``photos-eval.json`` + ``PHOTOS-EVAL.md``. The gateway comes
from the caller (``gateway(bundle, data_dir)``, a context manager yielding an HTTP client):
``models`` may not import the service, and the composition root builds a real one.

The report goes to its own files rather than into ``EVAL.md``: ``clipsearch models eval``
rewrites ``EVAL.md`` whole, and each report should survive a rerun of the other.
Exit codes follow ``models.eval.cli``: 0 after a report (targets met or not), 1 for a bundle,
corpus or run that fails, 2 for malformed arguments.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TextIO

from models.eval.cli import EXIT_BUNDLE, EXIT_USAGE, UsageError, bundles_ok, parse_baselines
from models.eval.photos.api import ApiError, HttpClient
from models.eval.photos.corpus import ALL_SOURCES, DEFAULT_CACHE, CorpusUnavailable, assemble

logger = logging.getLogger(__name__)

Gateway = Callable[[Path, Path], AbstractContextManager[HttpClient]]
MIXED_SCENES = 60
# The photo bundle's dev queries (models/photo/dev): texts tuned on, reported apart.
DEV_QUERIES = Path(__file__).parents[2] / "photo" / "dev" / "queries.tsv"


def eval_photos_command(
    bundle: Path,
    baselines: list[str],
    out: Path | None,
    cache: Path | None,
    *,
    gateway: Gateway,
    sources: tuple[str, ...] = ALL_SOURCES,
    mixed_scenes: int = MIXED_SCENES,
    stream: TextIO | None = None,
) -> int:
    """Evaluate ``bundle`` (and ``NAME=DIR`` baselines); write the report into ``out``
    (default: the bundle folder). Messages go to ``stream`` (stderr); returns the exit code."""
    stream = stream or sys.stderr

    def say(message: str) -> None:
        stream.write(message + "\n")
        stream.flush()

    try:
        named = parse_baselines(list(baselines))
    except UsageError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    bundle = Path(bundle)
    if not bundles_ok(bundle, named, say):
        return EXIT_BUNDLE
    try:
        corpus = assemble(cache or DEFAULT_CACHE, sources, progress=say)
    except CorpusUnavailable as exc:
        say(f"error: the photo corpus is unavailable: {exc}")
        return EXIT_BUNDLE

    from models.eval.photos.report import write_report
    from models.eval.photos.runner import (
        corpus_images,
        demo_captioned,
        evaluate_photos,
        load_documents,
        load_queries,
    )

    images, queries, documents = corpus_images(corpus), load_queries(), load_documents()
    primary = bundle.resolve().name or "bundle"
    runs = {primary: bundle, **{name: path for name, path in named.items() if name != primary}}
    results = {}
    with tempfile.TemporaryDirectory(prefix="clipsearch-photos-") as tmp:
        captioned = demo_captioned(Path(tmp) / "scenes", n=mixed_scenes)
        for name, path in runs.items():
            say(f"photos: evaluating {name} ({path}) on a gateway of its own")
            try:
                with gateway(path, Path(tmp) / f"gateway-{name}") as client:
                    results[name] = evaluate_photos(
                        client,
                        images,
                        queries,
                        captioned=captioned,
                        documents=documents,
                        progress=say,
                    )
            except (ApiError, OSError) as exc:
                logger.debug("photo evaluation failed", exc_info=True)
                say(f"error: evaluating {name} failed: {exc}")
                return EXIT_BUNDLE
    json_path, md_path = write_report(
        results, primary, out or bundle, corpus=corpus, dev_texts=dev_query_texts()
    )
    for line in _summary_lines(results):
        say(line)
    say(f"wrote {md_path} and {json_path}")
    return 0


def dev_query_texts(path: Path = DEV_QUERIES) -> frozenset[str]:
    """The query column of the dev queries file (group, query, tags; '#' comments), if any."""
    if not path.is_file():
        return frozenset()
    rows = (line.split("\t") for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(r[1].strip() for r in rows if len(r) >= 2 and not r[0].startswith("#"))


def _summary_lines(results: dict[str, dict[str, object]]) -> list[str]:
    from models.eval.photos.report import targets

    lines = []
    for name, result in results.items():
        for t in targets(result):
            verdict = {True: "pass", False: "FAIL", None: "n/a"}[t["passed"]]
            lines.append(f"  {name}: {verdict:4} {t['label']}: {t['shown']}")
    return lines
