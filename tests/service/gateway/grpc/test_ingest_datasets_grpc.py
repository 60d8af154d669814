"""Dataset sources over gRPC: the same request shapes as REST (``webdataset``, ``table`` with
``columns``), the same jobs, the same refusals."""

from __future__ import annotations

from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service.clients.search_grpc import SearchClient
from service.core.errors import ClipsearchError, ErrorType
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from tests.indexer.sources.datasets_support import caption_of, write_shards
from tests.service.gateway.grpc.conftest import wait_job


def _root(rest: TestClient) -> Path:
    root: Path = rest.app.state.runtime.settings.sources.allowed_roots[0]  # type: ignore[attr-defined]
    return root


def test_webdataset_and_table_over_grpc(
    rest: TestClient, client: SearchClient, stub: pb_grpc.SearchStub
) -> None:
    root = _root(rest)
    write_shards(root / "grpc-shards", 2, 4, corrupt=(1, 0))
    job_id = client.ingest({"webdataset": str(root / "grpc-shards" / "{00000..00001}.tar")})
    job = wait_job(client, job_id, 120)
    assert (job.state, job.total, job.done, job.failed) == ("completed", 8, 7, 1)
    assert (job.shards_total, job.shards_done, job.total_known) == (2, 2, True)
    assert "000010000" in job.errors[0].reason and "00001.tar" in job.errors[0].reason
    assert job.model_dump() == rest.get(f"/v1/jobs/{job_id}").json()

    rows = [{"text": caption_of(40 + i), "doc": f"g{i}"} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), root / "grpc.parquet")
    request = pb.IngestRequest(
        table=pb.Table(uri=str(root / "grpc.parquet"), columns={"caption": "text", "id": "doc"})
    )
    table_job = wait_job(client, stub.Ingest(request, timeout=30).job_id, 120)
    assert (table_job.state, table_job.done) == ("completed", 3)
    assert client.get_item("g1").caption == caption_of(41)


def test_a_missing_column_is_invalid_argument_naming_it(
    rest: TestClient, client: SearchClient, stub: pb_grpc.SearchStub
) -> None:
    root = _root(rest)
    pq.write_table(pa.Table.from_pylist([{"url": "x.jpg"}]), root / "nocaption.parquet")
    source = {"table": str(root / "nocaption.parquet"), "columns": {"caption": "caption"}}
    with pytest.raises(ClipsearchError) as refused:
        client.ingest(source)
    assert refused.value.type is ErrorType.invalid_input
    assert "columns.caption" in refused.value.message
    assert (
        refused.value.message
        == rest.post("/v1/ingest", json={"source": source}).json()["error"]["message"]
    )
    with pytest.raises(grpc.RpcError) as raw:
        stub.Ingest(pb.IngestRequest(webdataset=pb.Shards(patterns=["s3://nowhere/a.tar"])))
    assert raw.value.code() is grpc.StatusCode.PERMISSION_DENIED
