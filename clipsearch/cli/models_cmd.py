"""``clipsearch models ...``: offline model work (export, engines, evaluation, the tiny test
bundle, the demo data).

These commands reach into ``models/`` lazily, inside each command: the serving commands never
import it, and ``export`` needs the export extra (torch, open_clip) only when it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

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
