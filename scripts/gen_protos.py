"""Regenerate the gRPC stubs in service/rpc/proto/ from the protos in service/rpc/.

    python scripts/gen_protos.py           # write the stubs
    python scripts/gen_protos.py --check   # exit 1, naming each stale file, if they are not current

Each proto is compiled from a temporary copy at the path of its package (``encoder.proto`` at
``clipsearch/encoder/v1/``, ``search.proto`` at ``clipsearch/v1/``) so that its name in protobuf's
global descriptor pool is unique, and the generated ``from clipsearch.encoder.v1 import
encoder_pb2`` is rewritten into a relative import so the stubs import as a package. Output depends
only on the protos and the pinned grpcio-tools version.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RPC = ROOT / "service" / "rpc"
OUT = RPC / "proto"
# Each proto, and the package path it is compiled at (its `package`, as folders).
PROTOS: dict[str, Path] = {
    "encoder.proto": Path("clipsearch") / "encoder" / "v1",
    "search.proto": Path("clipsearch") / "v1",
}
GRPC_TOOLS_VERSION = "1.85.1"  # keep in step with pyproject's dev extra


def header(name: str, proto: str) -> str:
    return (
        f"# {name}: generated from service/rpc/{proto} by scripts/gen_protos.py\n"
        f"# (grpcio-tools {GRPC_TOOLS_VERSION}). DO NOT EDIT: change the proto and run\n"
        "# `make protos`; `make protos-check` fails when this file is stale.\n"
    )


def stub_names(proto: str) -> tuple[str, str, str]:
    stem = proto.removesuffix(".proto")
    return (f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py")


def generate(rpc: Path = RPC) -> dict[str, str]:
    """The stubs' text of every proto in ``rpc``, by file name."""
    stubs: dict[str, str] = {}
    for proto, package in PROTOS.items():
        stubs.update(generate_one(rpc / proto, package))
    return stubs


def generate_one(proto: Path, package: Path) -> dict[str, str]:
    """One proto's stubs' text, by file name."""
    from grpc_tools import protoc  # dev dependency: only this script needs it

    stem = proto.name.removesuffix(".proto")
    absolute = f"from {'.'.join(package.parts)} import {stem}_pb2 as"
    relative = f"from . import {stem}_pb2 as"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        (src / package).mkdir(parents=True)
        out.mkdir()
        shutil.copyfile(proto, src / package / proto.name)
        include = Path(protoc.__file__).parent / "_proto"  # well-known types
        argv = [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(package / proto.name),
        ]
        if protoc.main(argv) != 0:
            raise SystemExit(f"protoc failed on {proto}")
        stubs: dict[str, str] = {}
        for name in stub_names(proto.name):
            text = (out / package / name).read_text()
            if name.endswith("_grpc.py"):
                if absolute not in text:
                    raise SystemExit(f"{name}: the import to rewrite was not found")
                text = text.replace(absolute, relative)
            stubs[name] = header(name, proto.name) + text
    return stubs


def check_tools_version() -> None:
    installed = metadata.version("grpcio-tools")
    if installed != GRPC_TOOLS_VERSION:
        raise SystemExit(
            f"grpcio-tools {installed} is installed; the stubs are generated with "
            f"{GRPC_TOOLS_VERSION} (pip install grpcio-tools=={GRPC_TOOLS_VERSION})"
        )


def stale(stubs: dict[str, str], out: Path) -> list[str]:
    """Names of the files in ``out`` that differ from ``stubs`` (or are missing)."""
    differ = []
    for name, text in stubs.items():
        path = out / name
        current = path.read_text() if path.is_file() else None
        if current != text:
            differ.append(name)
            diff = difflib.unified_diff(
                (current or "").splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path} (committed)",
                f"{path} (generated)",
                n=1,
            )
            sys.stderr.writelines(list(diff)[:40])
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs are not current")
    parser.add_argument("--protos", type=Path, default=RPC, help="the protos' folder")
    parser.add_argument("--out", type=Path, default=OUT, help="the stubs' folder")
    args = parser.parse_args(argv)
    check_tools_version()
    stubs = generate(args.protos)
    if args.check:
        differ = stale(stubs, args.out)
        for name in differ:
            sys.stderr.write(f"{args.out / name} is not current: run `make protos`\n")
        return 1 if differ else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in stubs.items():
        (args.out / name).write_text(text)
    sys.stdout.write(f"wrote {', '.join(stubs)} to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
