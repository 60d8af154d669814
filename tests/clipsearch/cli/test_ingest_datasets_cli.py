"""``clipsearch ingest`` with webdataset shards on S3 and a parquet table with its column options,
against a real gateway (uvicorn on the loopback, tiny bundle, Qdrant Edge, in-process jobs) and
moto's S3 server; ``--allow-root s3://bucket/pre`` reaches the settings as an object prefix."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn
from typer.testing import CliRunner

from clipsearch.bootstrap import build_components
from clipsearch.cli.main import _given_roots, _settings, app, source_spec
from loadtests.s3server import aws_env, moto_s3, upload
from service.core.config import SourcesSettings
from service.gateway.app import create_app
from tests.indexer.sources.datasets_support import caption_of, write_shards
from tests.service.gateway.conftest import make_settings
from tests.support import wait_until

BUCKET = "cli-bucket"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path
) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("cli-datasets")
    settings = make_settings(base, tiny_bundle_dir)
    write_shards(base / "src" / "shards", 3, 5)
    with moto_s3(base) as endpoint, pytest.MonkeyPatch.context() as env:
        for name, value in aws_env(endpoint).items():
            env.setenv(name, value)
        upload(endpoint, base / "src" / "shards", BUCKET, "shards")
        sources = SourcesSettings.model_validate(
            {"allowed_roots": [str(base / "src"), f"s3://{BUCKET}/shards"]}
        )
        served = create_app(settings.model_copy(update={"sources": sources}), build_components)
        server = uvicorn.Server(
            uvicorn.Config(served, host="127.0.0.1", port=0, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: server.started, timeout=60)
            assert served.state.runtime.wait(120), served.state.runtime.readiness()
            port = server.servers[0].sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}", base / "src"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def test_ingest_s3_shards_by_brace_pattern(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    result = CliRunner().invoke(
        app, ["ingest", f"s3://{BUCKET}/shards/{{00000..00002}}.tar", "--server", url, "--json"]
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["state"], job["done"], job["failed"], job["shards_total"]) == (
        "completed",
        15,
        0,
        3,
    )


def test_ingest_a_parquet_table_with_column_options(gateway: tuple[str, Path]) -> None:
    url, src = gateway
    rows = [{"link": "", "text": caption_of(i), "key": f"k{i}"} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), src / "meta.parquet")
    args = ["ingest", str(src / "meta.parquet"), "--url-col", "link", "--caption-col", "text"]
    result = CliRunner().invoke(app, [*args, "--id-col", "key", "--server", url, "--json"])
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["state"], job["total"], job["done"]) == ("completed", 6, 6), job
    # A column that is not there: the gateway's 4xx names it, and the command fails.
    missing = CliRunner().invoke(
        app, ["ingest", str(src / "meta.parquet"), "--caption-col", "caption", "--server", url]
    )
    assert missing.exit_code != 0 and "columns.caption" in missing.output, missing.output


def test_source_spec_and_allow_root(tmp_path: Path) -> None:
    assert source_spec(["s3://b/{0..1}.tar"]) == {"webdataset": ["s3://b/{0..1}.tar"]}
    assert source_spec(["s3://b/m.parquet"], columns={"uri": "url"}) == {
        "table": "s3://b/m.parquet",
        "columns": {"uri": "url"},
    }
    assert source_spec(["s3://b/m.jsonl"], table=True) == {"table": "s3://b/m.jsonl"}
    settings = _settings(allowed_roots=_given_roots([str(tmp_path), "s3://bucket/pre"]))
    assert settings.sources.allowed_roots[-1] == tmp_path.resolve()
    assert settings.sources.allowed_prefixes == ["s3://bucket/pre"]
