"""``clipsearch collections list|show|create|delete`` and ``--collection`` on ``ingest``,
``search`` (REST and ``--grpc``) and ``jobs list``, against a real gateway (uvicorn and its gRPC
server on the loopback, tiny bundle, Qdrant Edge, in-process jobs): results on stdout, a refusal
as an error on stderr with exit 1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from clipsearch.bootstrap import build_components
from clipsearch.cli.main import app
from service.gateway.app import create_app
from service.gateway.grpc import serve_grpc
from tests.service.gateway.conftest import make_settings
from tests.support import wait_until

DOCS = {
    "doc-bike": "a yellow bicycle leaning on a brick wall",
    "doc-dogs": "two dogs playing in the snow",
    "doc-boat": "a small red boat on a calm lake",
}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path
) -> Iterator[tuple[str, str, Path]]:
    """The gateway's URL, its gRPC address and its allowed source folder."""
    base = tmp_path_factory.mktemp("cli-collections")
    served = create_app(make_settings(base, tiny_bundle_dir), build_components)
    grpc_gateway = serve_grpc(served, host="127.0.0.1", port=0)
    server = uvicorn.Server(uvicorn.Config(served, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60)
        assert served.state.runtime.wait(120), served.state.runtime.readiness()
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", grpc_gateway.address, base / "src"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_collection_is_created_filled_searched_and_deleted_from_the_cli(
    gateway: tuple[str, str, Path], tiny_narrow_bundle_dir: Path
) -> None:
    url, grpc_address, src = gateway
    server = ("--server", url)

    made = cli("collections", "create", "alpha", "--bundle", str(tiny_narrow_bundle_dir), *server)
    assert made.exit_code == 0, made.output
    assert made.stderr == "created collection alpha\n"
    lines = made.stdout.splitlines()
    assert lines[:3] == ["name: alpha", "default: no", lines[2]]
    assert lines[2].startswith("bundle: tiny-narrow@") and "points: 0" in lines

    listed = cli("collections", "list", *server)
    assert listed.exit_code == 0, listed.output
    assert listed.stderr == "2 collections\n"
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert set(rows) == {"media", "alpha"}
    assert rows["media"].endswith("(default)") and "tiny-narrow@" in rows["alpha"]
    shown = as_json(cli("collections", "show", "alpha", "--json", *server))
    assert shown == httpx.get(f"{url}/v1/collections/alpha").json()
    names = [
        c["alias"] for c in as_json(cli("collections", "list", "--json", *server))["collections"]
    ]
    assert sorted(names) == ["alpha", "media"]

    manifest = src / "docs.jsonl"
    manifest.write_text(
        "".join(json.dumps({"id": k, "description": v}) + "\n" for k, v in DOCS.items())
    )
    job = as_json(cli("ingest", str(manifest), "--collection", "alpha", "--json", *server))
    assert (job["state"], job["done"], job["failed"], job["collection"]) == (
        "completed",
        3,
        0,
        "alpha",
    )
    assert as_json(cli("collections", "show", "alpha", "--json", *server))["points"] == 3

    query = ("search", "dogs in the snow", "--mode", "description", "--json")
    found = as_json(cli(*query, "--collection", "alpha", *server))
    assert found["model"] == shown["bundle"]
    assert {h["media_id"] for h in found["hits"]} == set(DOCS)
    assert found["hits"][0]["media_id"] == "doc-dogs"
    by_grpc = as_json(cli(*query, "--collection", "alpha", "--grpc", grpc_address))
    assert [h["id"] for h in by_grpc["hits"]] == [h["id"] for h in found["hits"]]
    assert as_json(cli(*query, *server))["hits"] == []  # media has none of them
    text = cli(
        "search", "dogs in the snow", "--mode", "description", "--collection", "alpha", *server
    )
    assert text.exit_code == 0 and len(text.stdout.splitlines()) == 3, text.output

    jobs = as_json(cli("jobs", "list", "--collection", "alpha", "--json", *server))["jobs"]
    assert [j["id"] for j in jobs] == [job["id"]]
    media_jobs = as_json(cli("jobs", "list", "--collection", "media", "--json", *server))["jobs"]
    assert job["id"] not in [j["id"] for j in media_jobs]

    deleted = cli("collections", "delete", "alpha", *server)
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout.splitlines() == [v["name"] for v in shown["versions"]]
    assert deleted.stderr.startswith("deleted collection alpha: 1 version\n")
    gone = cli("collections", "show", "alpha", *server)
    assert gone.exit_code == 1 and not gone.stdout
    assert "error 404: not_found: collection 'alpha' does not exist" in gone.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("collections", "create", "Bad Name"), "error 400: invalid_input"),
        (("collections", "create", "media"), "error 409: conflict"),
        (("collections", "create", "gamma", "--bundle", "no-such-bundle"), "error 404"),
        (("collections", "delete", "media"), "error 409: conflict"),
        (("collections", "delete", "nope"), "error 404"),
        (("collections", "show", "nope"), "error 404"),
        (("search", "x", "--collection", "nope"), "error 404"),
        (("search", "x", "--collection", "nope", "--grpc", "GRPC"), "not_found"),
    ],
)
def test_refusals_are_errors_on_stderr_and_exit_1(
    gateway: tuple[str, str, Path], args: tuple[str, ...], said: str
) -> None:
    url, grpc_address, _ = gateway
    args = tuple(grpc_address if a == "GRPC" else a for a in args)
    result = cli(*args, "--server", url)
    assert result.exit_code == 1, result.output
    assert said in result.stderr and not result.stdout
    # Nothing was lost: the configured collection is there and still the only one.
    listed = as_json(cli("collections", "list", "--json", "--server", url))["collections"]
    assert [c["alias"] for c in listed] == ["media"]


def test_ingest_into_a_collection_that_does_not_exist_starts_no_job(
    gateway: tuple[str, str, Path],
) -> None:
    url, _, src = gateway
    manifest = src / "one.jsonl"
    manifest.write_text(json.dumps({"id": "d", "description": "a cat"}) + "\n")
    before = as_json(cli("jobs", "list", "--json", "--server", url))["total"]
    result = cli("ingest", str(manifest), "--collection", "nope", "--server", url)
    assert result.exit_code == 1 and not result.stdout
    assert "error 404: not_found: collection 'nope' does not exist" in result.stderr
    assert as_json(cli("jobs", "list", "--json", "--server", url))["total"] == before
