"""``clipsearch models ...``: offline model work (export, engines, evaluation, the tiny test
bundle, the demo data).

These commands reach into ``models/`` lazily, inside each command: the serving commands never
import it, and ``export`` needs the export extra (torch, open_clip) only when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
) -> None:
    """What `clipsearch demo` serves, made offline (`make run` runs this first): synthetic
    scenes under <data-dir>/demo, and the tiny test bundle when there is no bundle to serve
    (no CLIPSEARCH_BUNDLE and no models/zoo/default). Both are kept once written."""
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
    tiny = tiny_bundle_dir(settings)
    if settings.bundle or (ZOO_DIR / DEFAULT_ZOO_BUNDLE / MANIFEST_NAME).is_file():
        return
    if not (tiny / MANIFEST_NAME).is_file():
        build_tiny_bundle(tiny, seed=0)
        typer.echo(f"no shipped default bundle: built the tiny test bundle in {tiny}")
