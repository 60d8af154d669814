"""``clipsearch models ...``: offline model work (export, engines, evaluation, the tiny test
bundle, the demo data).

These commands reach into ``models/`` lazily, inside each command: the serving commands never
import it, and ``export`` needs the export extra (torch, open_clip) only when it runs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from models.eval.search.relevance import Curve, HeldOut

app = typer.Typer(
    help="Export, build engines for, and evaluate model bundles.", no_args_is_help=True
)


def _missing(extra: str, exc: ImportError) -> typer.Exit:
    typer.echo(
        f"this command needs the '{extra}' extra ({exc.name} is not installed): "
        f"pip install 'clipsearch[{extra}]'",
        err=True,
    )
    return typer.Exit(2)


@app.command()
def export(
    arch: Annotated[str, typer.Option(help="open_clip architecture, e.g. ViT-B-32")],
    out: Annotated[Path, typer.Option(help="bundle folder to write")],
    pretrained: Annotated[
        str | None, typer.Option(help="open_clip pretrained tag or a checkpoint file")
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | int8")] = "fp32",
    context_length: Annotated[
        int | None, typer.Option(help="text context (Long-CLIP: 248)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="bundle name")] = None,
) -> None:
    """Export an OpenCLIP model to a bundle; refuses to write one that fails parity."""
    try:
        from models.export.cli import export_command
    except ImportError as exc:
        raise _missing("export", exc) from None
    raise typer.Exit(
        export_command(
            arch=arch,
            pretrained=pretrained,
            out=out,
            precision=precision,
            context_length=context_length,
            name=name,
        )
    )


@app.command("build-engine")
def build_engine(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    fp16: Annotated[bool, typer.Option("--fp16/--fp32", help="build fp16 engines")] = True,
    batch: Annotated[str, typer.Option(help="MIN:OPT:MAX batch sizes")] = "1:16:64",
) -> None:
    """Build TensorRT engines for a bundle and verify them against ONNX Runtime."""
    try:
        from models.export.cli import build_engine_command
    except ImportError as exc:
        raise _missing("gpu", exc) from None
    raise typer.Exit(build_engine_command(bundle=bundle, fp16=fp16, batch=batch))


@app.command("eval")
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    n: Annotated[int, typer.Option(help="gallery size (test split)", min=10)] = 1000,
    out: Annotated[Path | None, typer.Option(help="report folder (default: the bundle)")] = None,
    baseline: Annotated[
        list[str] | None, typer.Option(help="NAME=BUNDLE_DIR, a baseline column (repeatable)")
    ] = None,
) -> None:
    """Evaluate a bundle on the scenes test split; writes eval.json and EVAL.md."""
    from models.eval.cli import eval_command

    raise typer.Exit(eval_command(bundle=bundle, n=n, out=out, baselines=baseline or []))


@app.command("eval-photos")
def eval_photos(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    baseline: Annotated[
        list[str] | None, typer.Option(help="NAME=BUNDLE_DIR, a baseline column (repeatable)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default: the bundle)")] = None,
    cache: Annotated[
        Path | None, typer.Option(help="photo corpus cache (default .cache/clipsearch/photos)")
    ] = None,
) -> None:
    """Evaluate bundles on real photographs through the HTTP API of a real gateway each;
    writes photos-eval.json and PHOTOS-EVAL.md."""
    from models.eval.photos.cli import eval_photos_command

    raise typer.Exit(
        eval_photos_command(
            bundle=bundle, baselines=baseline or [], out=out, cache=cache, gateway=_photo_gateway
        )
    )


@app.command("eval-search")
def eval_search(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    out: Annotated[Path | None, typer.Option(help="report folder (default: the bundle)")] = None,
    cache: Annotated[
        Path | None, typer.Option(help="photo corpus cache (default .cache/clipsearch/photos)")
    ] = None,
) -> None:
    """Mixed-kind search evaluation (image-only photos, captioned images, text-only documents,
    video segments) through the HTTP API of a real gateway: R@1/R@10 per mode and item kind;
    writes search-eval.json and SEARCH-EVAL.md."""
    from models.eval.search.cli import eval_search_command

    raise typer.Exit(
        eval_search_command(bundle=bundle, out=out, cache=cache, gateway=_search_gateway)
    )


# The channel whose null standardises each kind of evidence's pairs (``fusion.evidence_kind``):
# a picture is judged in ``image``, a generated description in ``description``; given texts are
# caption and description pairs pooled (``relevance.gather``), on the caption channel's null.
EVIDENCE_CHANNEL = {"picture": "image", "generated": "description", "text": "caption"}
FIT_REPORT = "relevance-fit.json"
FIT_PAIRS = "relevance-pairs.npz"


@app.command("fit-relevance")
def fit_relevance(
    bundle: Annotated[Path, typer.Argument(help="bundle folder: the curves are on its null")],
    dev_root: Annotated[
        Path | None,
        typer.Option(
            help="the photo dev set's unpacked Debian packages (python -m models.photo.dev "
            "fetch --root DIR); packages missing there are fetched with apt-get"
        ),
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(
            help=f"re-fit from the pairs a previous run saved ({FIT_PAIRS}) instead of "
            "gathering them"
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default: the bundle)")] = None,
) -> None:
    """Re-fit the relevance curves of fused search (service.search.fusion.RELEVANCE): gathers
    held-out pairs (the photo dev set's queries x photos, demo scenes of a held-out seed x a
    paraphrase of each caption) through a gateway on BUNDLE, standardises them on BUNDLE's null
    and fits one logistic curve per kind of evidence. Prints the curves and the Python for
    fusion.py (whose constants change only by hand); writes relevance-fit.json and, when it
    gathered them, the pairs (relevance-pairs.npz) into --out."""
    if (dev_root is None) == (pairs is None):
        raise typer.BadParameter("give exactly one of --dev-root and --pairs")
    from models.eval.cli import EXIT_BUNDLE, bundles_ok
    from models.eval.photos.api import Api, ApiError
    from models.eval.search.relevance import HeldOut, fit, gather

    def say(message: str) -> None:
        typer.echo(message, err=True)

    held_out, recorded = _load_pairs(pairs) if pairs is not None else (None, None)
    if not bundles_ok(bundle, {}, say):
        raise typer.Exit(EXIT_BUNDLE)
    if dev_root is not None:
        _fetch_dev_photos(dev_root, say)
    with tempfile.TemporaryDirectory(prefix="clipsearch-fit-relevance-") as tmp:
        root = Path(tmp)
        try:
            with _search_gateway(bundle, root / "gateway", root) as client:
                Api(client).wait_ready()
                model, null = _gateway_null(client)
                if held_out is None:
                    assert dev_root is not None
                    say(f"gathering held-out pairs through a gateway on {model} ...")
                    held_out = gather(client, dev_root, root / "scenes")
        except (ApiError, OSError) as exc:
            say(f"error: gathering the held-out pairs failed: {exc}")
            raise typer.Exit(EXIT_BUNDLE) from None
    assert isinstance(held_out, HeldOut)
    if recorded is not None and recorded != model:
        raise typer.BadParameter(
            f"gathered with bundle {recorded}, not {model}: cosines are the bundle's own",
            param_hint="'--pairs'",
        )
    missing = sorted(set(EVIDENCE_CHANNEL.values()) - set(null))
    if missing:
        say(f"error: bundle {model} has no null for channel(s) {missing}: nothing to fit on")
        raise typer.Exit(EXIT_BUNDLE)
    by_kind = {kind: null[channel] for kind, channel in EVIDENCE_CHANNEL.items()}
    if not np.allclose(null["caption"], null["description"], atol=1e-3):
        say(
            "note: given texts pool caption and description pairs on the caption channel's "
            f"null {_pair(null['caption'])}; this bundle's description null "
            f"{_pair(null['description'])} differs, so its given descriptions are fitted on "
            "a slightly different scale from the one fusion puts them on"
        )
    for kind, flags in held_out.relevant.items():
        if not 0 < int(np.sum(flags)) < len(flags):
            say(
                f"error: cannot fit the curves: the {kind} pairs ({int(np.sum(flags))} of "
                f"{len(flags)} relevant) need both relevant and unrelated pairs"
            )
            raise typer.Exit(EXIT_BUNDLE)
    try:
        curves = fit(held_out, by_kind)
    except ValueError as exc:
        say(f"error: cannot fit the curves: {exc}")
        raise typer.Exit(EXIT_BUNDLE) from None
    report = _fit_report(model, by_kind, curves, source=str(pairs or dev_root))
    folder = Path(out or bundle)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FIT_REPORT).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if pairs is None:
        _save_pairs(folder / FIT_PAIRS, held_out, model)
        say(f"wrote {folder / FIT_PAIRS}")
    say(f"wrote {folder / FIT_REPORT}")
    for kind, curve in report["curves"].items():
        half = curve["z_at_half"]
        typer.echo(
            f"{kind:<10} slope {curve['slope']:.4f}  intercept {curve['intercept']:.4f}  "
            f"P=0.5 at z {'never' if half is None else f'{half:.2f}'}  pairs {curve['pairs']} "
            f"({curve['relevant']} relevant)"
        )
        if curve["slope"] <= 0:
            say(
                f"warning: the {kind} curve does not rise with the score (slope "
                f"{curve['slope']:.4f}): its pairs do not tell relevant from unrelated"
            )
    typer.echo("")
    typer.echo(report["python"])


def _pair(scale: tuple[float, float]) -> str:
    return f"{scale[0]:.4f} ± {scale[1]:.4f}"


def _gateway_null(client: TestClient) -> tuple[str, dict[str, tuple[float, float]]]:
    """The gateway's bundle (name@version) and its null per channel (mean, spread): what fusion
    standardises a text query's cosines by (``SearchService.null_scales``)."""
    search = client.app.state.runtime.components.search  # type: ignore[attr-defined]
    scales = search.null_scales()
    return str(search.info().bundle), {c: (s.mean, s.spread) for c, s in scales.items()}


def _fetch_dev_photos(dev_root: Path, say: Callable[[str], None]) -> None:
    import subprocess

    from models.photo.dev.devset import fetch, load_photos

    try:
        fetch(dev_root, load_photos())
    except (OSError, subprocess.CalledProcessError) as exc:
        say(
            f"error: cannot fetch the photo dev set into {dev_root} ({exc}); fetch it where "
            "apt-get works (python -m models.photo.dev fetch --root DIR) and pass that folder"
        )
        raise typer.Exit(1) from None


def _save_pairs(path: Path, held_out: HeldOut, model: str) -> None:
    arrays: dict[str, np.ndarray] = {"bundle": np.asarray(model)}
    for kind in EVIDENCE_CHANNEL:
        arrays[f"{kind}_cosines"] = np.asarray(held_out.cosines[kind], dtype=np.float64)
        arrays[f"{kind}_relevant"] = np.asarray(held_out.relevant[kind], dtype=bool)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def _load_pairs(path: Path) -> tuple[HeldOut, str | None]:
    """The pairs a previous run saved: per kind of evidence, cosines and whether each pair is
    relevant (``<kind>_cosines``, ``<kind>_relevant``); and the bundle that gathered them
    (``bundle``; None where the file does not say)."""
    from models.eval.search.relevance import HeldOut

    def bad(problem: str) -> typer.BadParameter:
        return typer.BadParameter(f"{path}: {problem}", param_hint="'--pairs'")

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise bad(f"not a pairs file ({exc})") from None
    cosines, relevant = {}, {}
    for kind in EVIDENCE_CHANNEL:
        x, y = arrays.get(f"{kind}_cosines"), arrays.get(f"{kind}_relevant")
        if x is None or y is None:
            raise bad(f"no {kind}_cosines and {kind}_relevant arrays")
        if x.ndim != 1 or x.shape != y.shape:
            raise bad(f"{kind}: one cosine and one relevant flag per pair, as 1-d arrays")
        if y.dtype != bool or not np.issubdtype(x.dtype, np.floating):
            raise bad(f"{kind}: cosines are floats and relevant flags booleans")
        if not np.all(np.abs(x) <= 1.0 + 1e-6):
            raise bad(f"{kind}: a cosine outside [-1, 1]")
        cosines[kind], relevant[kind] = x, y
    bundle = arrays.get("bundle")
    return HeldOut(cosines, relevant), str(bundle.item()) if bundle is not None else None


def _fit_report(
    model: str, null: dict[str, tuple[float, float]], curves: dict[str, Curve], *, source: str
) -> dict[str, Any]:
    """What ``fit-relevance`` writes: the null each kind was standardised on, each curve (with
    the standardised score where P = 0.5), and the Python for ``fusion.RELEVANCE``."""
    fitted = {
        kind: {
            "slope": round(c.slope, 4),
            "intercept": round(c.intercept, 4),
            "pairs": c.pairs,
            "relevant": c.relevant,
            "z_at_half": round(-c.intercept / c.slope, 2) if c.slope else None,
        }
        for kind, c in curves.items()
    }
    lines = [
        f"# Fitted by `clipsearch models fit-relevance` for {model},",
        f"# pairs: {source}.",
        "RELEVANCE: dict[Evidence, RelevanceCurve] = {",
        *(
            f'    "{kind}": RelevanceCurve({c["slope"]:.4f}, {c["intercept"]:.4f}),'
            for kind, c in fitted.items()
        ),
        "}",
    ]
    return {
        "bundle": model,
        "pairs": source,
        "null": {
            kind: {"channel": EVIDENCE_CHANNEL[kind], "mean": mean, "spread": spread}
            for kind, (mean, spread) in null.items()
        },
        "curves": fitted,
        "python": "\n".join(lines),
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@contextmanager
def _search_gateway(bundle: Path, data_dir: Path, allowed: Path) -> Iterator[TestClient]:
    """``_photo_gateway`` that may also read files under ``allowed`` (the eval's videos), with
    the default 5 s fixed video segments."""
    from fastapi.testclient import TestClient

    from clipsearch.bootstrap import build_components
    from service.core.config import Settings
    from service.gateway.app import create_app

    settings = Settings(
        data_dir=data_dir,
        bundle=str(bundle),
        qdrant={"url": None},  # type: ignore[arg-type]
        broker={"url": None},  # type: ignore[arg-type]
        encoder={"endpoints": []},  # type: ignore[arg-type]
        auth={"api_keys": {}},  # type: ignore[arg-type]
        sources={"allowed_roots": [allowed]},  # type: ignore[arg-type]
        video={"segmenting": "fixed", "segment_s": 5.0},  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings, build_components), raise_server_exceptions=False) as c:
        yield c


@contextmanager
def _photo_gateway(bundle: Path, data_dir: Path) -> Iterator[TestClient]:
    """A real gateway (real lifespan: encoder, embedded store, job runner) on ``bundle``, served
    in-process: its TestClient is an httpx-style client. Embedded whatever the environment says,
    so an evaluation never writes into a shared Qdrant or queue."""
    from fastapi.testclient import TestClient

    from clipsearch.bootstrap import build_components
    from service.core.config import Settings
    from service.gateway.app import create_app

    settings = Settings(
        data_dir=data_dir,
        bundle=str(bundle),
        qdrant={"url": None},  # type: ignore[arg-type]
        broker={"url": None},  # type: ignore[arg-type]
        encoder={"endpoints": []},  # type: ignore[arg-type]
        auth={"api_keys": {}},  # type: ignore[arg-type]
    )
    # raise_server_exceptions=False: a 500 reaches the evaluation as the HTTP answer a user gets.
    with TestClient(create_app(settings, build_components), raise_server_exceptions=False) as c:
        yield c


@app.command()
def tiny(out: Annotated[Path, typer.Argument(help="bundle folder to write")]) -> None:
    """Build the tiny test bundle (lexical text tower, colour-layout image tower)."""
    from models.tiny import build_tiny_bundle

    typer.echo(str(build_tiny_bundle(out, seed=0)))


@app.command("demo-data")
def demo_data(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="data dir [CLIPSEARCH_DATA_DIR]")
    ] = None,
    scenes: Annotated[int, typer.Option(min=1, help="demo scenes to generate")] = 60,
    photos: Annotated[
        bool, typer.Option(help="the sample photos of scikit-image and scikit-learn")
    ] = True,
) -> None:
    """What `clipsearch demo` serves, made offline (`make run` runs this first): synthetic
    scenes (captioned and described) under <data-dir>/demo, the sample photos that ship with
    scikit-image and scikit-learn (read out of their wheels, uncaptioned) under
    <data-dir>/demo/photos, and the tiny test bundle when there is no bundle to serve (no
    CLIPSEARCH_BUNDLE and no models/zoo/photo). Everything is kept once written."""
    from clipsearch.bundles import DEFAULT_ZOO_BUNDLE, ZOO_DIR, tiny_bundle_dir
    from models.data.scenes import write_demo_dataset
    from models.tiny import build_tiny_bundle
    from service.core.bundle.manifest import MANIFEST_NAME
    from service.core.config import Settings

    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    demo_dir = settings.data_dir / "demo"
    if any(demo_dir.glob("*.png")):
        typer.echo(f"demo scenes: {demo_dir} (kept)")
    else:
        write_demo_dataset(demo_dir, n=scenes)
        typer.echo(f"demo scenes: wrote {scenes} to {demo_dir}")
    if photos:
        _demo_photos(demo_dir / "photos", settings.data_dir / "cache" / "photos")
    tiny = tiny_bundle_dir(settings)
    if settings.bundle or (ZOO_DIR / DEFAULT_ZOO_BUNDLE / MANIFEST_NAME).is_file():
        return
    if not (tiny / MANIFEST_NAME).is_file():
        build_tiny_bundle(tiny, seed=0)
        typer.echo(f"no shipped default bundle: built the tiny test bundle in {tiny}")


def _demo_photos(folder: Path, cache: Path) -> None:
    """Copy the scikit-image and scikit-learn sample photos (pinned, checked by sha256) into
    ``folder``; without a package index to fetch the wheels from, say so and go on."""
    import shutil

    from models.eval.photos.corpus import DEMO_SOURCES, CorpusUnavailable, assemble

    if folder.is_dir() and any(folder.iterdir()):
        typer.echo(f"demo photos: {folder} (kept)")
        return
    try:
        corpus = assemble(cache, DEMO_SOURCES, progress=lambda m: typer.echo(m, err=True))
    except CorpusUnavailable as exc:
        typer.echo(f"demo photos: skipped ({exc}); the demo serves the scenes alone", err=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    for photo in corpus.photos:
        shutil.copyfile(photo.path, folder / photo.path.name)
    typer.echo(f"demo photos: wrote {len(corpus.photos)} to {folder}")
