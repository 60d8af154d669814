"""The committed gRPC stubs are exactly what scripts/gen_protos.py generates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_protos.py"
STUBS = ROOT / "service" / "rpc" / "proto"


def gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_committed_stubs_are_current() -> None:
    result = gen("--check")
    assert result.returncode == 0, result.stderr


def test_a_stale_stub_fails_the_check_and_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(STUBS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stub = copy / "encoder_pb2_grpc.py"
    stub.write_text(stub.read_text().replace("class EncoderStub", "class EditedStub"))
    result = gen("--check", "--out", str(copy))
    assert result.returncode == 1
    assert "encoder_pb2_grpc.py is not current" in result.stderr
    assert "encoder_pb2.py is not current" not in result.stderr

    assert gen("--out", str(copy)).returncode == 0  # regenerating repairs it
    assert gen("--check", "--out", str(copy)).returncode == 0
    assert stub.read_text() == (STUBS / "encoder_pb2_grpc.py").read_text()


def test_the_stubs_import_as_a_package_with_the_header() -> None:
    from service.rpc.proto import encoder_pb2, encoder_pb2_grpc

    # The relative import: the grpc stub uses this package's messages, not a top-level copy.
    assert encoder_pb2_grpc.clipsearch_dot_encoder_dot_v1_dot_encoder__pb2 is encoder_pb2
    for name in ("encoder_pb2.py", "encoder_pb2.pyi", "encoder_pb2_grpc.py"):
        assert "DO NOT EDIT" in (STUBS / name).read_text().splitlines()[1]
    assert encoder_pb2.DESCRIPTOR.name == "clipsearch/encoder/v1/encoder.proto"


def test_the_search_api_stubs_import_as_a_package_under_their_own_name() -> None:
    from service.rpc.proto import search_pb2, search_pb2_grpc

    assert search_pb2_grpc.clipsearch_dot_v1_dot_search__pb2 is search_pb2
    for name in ("search_pb2.py", "search_pb2.pyi", "search_pb2_grpc.py"):
        lines = (STUBS / name).read_text().splitlines()
        assert "service/rpc/search.proto" in lines[0] and "DO NOT EDIT" in lines[1]
    assert search_pb2.DESCRIPTOR.name == "clipsearch/v1/search.proto"
    assert search_pb2.DESCRIPTOR.services_by_name["Search"].full_name == "clipsearch.v1.Search"


def test_a_stale_search_stub_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(STUBS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "search_pb2.pyi").unlink()
    result = gen("--check", "--out", str(copy))
    assert result.returncode == 1
    assert "search_pb2.pyi is not current" in result.stderr
    assert "encoder_pb2" not in result.stderr.replace(str(copy), "")
