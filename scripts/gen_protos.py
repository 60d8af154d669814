"""Regenerate the gRPC stubs in service/rpc/proto/ from service/rpc/encoder.proto.

    python scripts/gen_protos.py           # write the stubs
    python scripts/gen_protos.py --check   # exit 1, naming each stale file, if they are not current

The proto is compiled from a temporary copy at ``clipsearch/encoder/v1/encoder.proto`` so that its
name in protobuf's global descriptor pool is unique, and the generated ``from clipsearch.encoder.v1
import encoder_pb2`` is rewritten into a relative import so the stubs import as a package. Output
depends only on the proto and the pinned grpcio-tools version.
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
PROTO = ROOT / "service" / "rpc" / "encoder.proto"
OUT = ROOT / "service" / "rpc" / "proto"
PACKAGE_PATH = Path("clipsearch") / "encoder" / "v1"
STUBS = ("encoder_pb2.py", "encoder_pb2.pyi", "encoder_pb2_grpc.py")
GRPC_TOOLS_VERSION = "1.85.1"  # keep in step with pyproject's dev extra
ABSOLUTE_IMPORT = "from clipsearch.encoder.v1 import encoder_pb2 as"
RELATIVE_IMPORT = "from . import encoder_pb2 as"


def header(name: str) -> str:
    return (
        f"# {name}: generated from service/rpc/encoder.proto by scripts/gen_protos.py\n"
        f"# (grpcio-tools {GRPC_TOOLS_VERSION}). DO NOT EDIT: change the proto and run\n"
        "# `make protos`; `make protos-check` fails when this file is stale.\n"
    )


def generate(proto: Path = PROTO) -> dict[str, str]:
    """The stubs' text, by file name."""
    from grpc_tools import protoc  # dev dependency: only this script needs it

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        (src / PACKAGE_PATH).mkdir(parents=True)
        out.mkdir()
        shutil.copyfile(proto, src / PACKAGE_PATH / proto.name)
        include = Path(protoc.__file__).parent / "_proto"  # well-known types
        argv = [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PACKAGE_PATH / proto.name),
        ]
        if protoc.main(argv) != 0:
            raise SystemExit(f"protoc failed on {proto}")
        stubs: dict[str, str] = {}
        for name in STUBS:
            text = (out / PACKAGE_PATH / name).read_text()
            if name.endswith("_grpc.py"):
                if ABSOLUTE_IMPORT not in text:
                    raise SystemExit(f"{name}: the import to rewrite was not found")
                text = text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
            stubs[name] = header(name) + text
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
    parser.add_argument("--proto", type=Path, default=PROTO)
    parser.add_argument("--out", type=Path, default=OUT, help="the stubs' folder")
    args = parser.parse_args(argv)
    check_tools_version()
    stubs = generate(args.proto)
    if args.check:
        differ = stale(stubs, args.out)
        for name in differ:
            sys.stderr.write(f"{args.out / name} is not current: run `make protos`\n")
        return 1 if differ else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in stubs.items():
        (args.out / name).write_text(text)
    sys.stdout.write(f"wrote {', '.join(STUBS)} to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
