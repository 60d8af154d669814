"""The standard health service tells what /health/ready tells, and a generic reflection client
sees the API."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from service.core.config import Settings
from service.gateway.grpc import GrpcGateway
from service.gateway.metrics import GatewayMetrics
from service.gateway.state import Runtime
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import from_rpc_error
from tests.service.gateway.conftest import make_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_says_serving_for_the_server_and_the_service(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "clipsearch.v1.Search"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service="clipsearch.v1.Search"))
    assert next(watch).status == SERVING
    watch.cancel()
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_generic_reflection_client_lists_and_describes_the_api(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"clipsearch.v1.Search", "grpc.health.v1.Health"} <= services
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("clipsearch.v1.Search")
    assert {m.name for m in service.methods} == {
        "Search",
        "GetItem",
        "DeleteItem",
        "Embed",
        "Ingest",
        "GetJob",
        "ListJobs",
        "CancelJob",
        "CreateCollection",
        "ListCollections",
        "GetCollection",
        "DeleteCollection",
    }
    request = pool.FindMessageTypeByName("clipsearch.v1.SearchRequest")
    assert {"text", "image", "item_id", "filter", "limit"} <= set(request.fields_by_name)


def test_health_and_calls_before_the_components_are_up(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    """While start-up runs (and after it failed) health says NOT_SERVING and calls are
    UNAVAILABLE with a retry hint, as /health/ready and REST's 503 say."""
    go = threading.Event()

    def factory(settings: Settings) -> Any:
        go.wait(30)
        raise RuntimeError("the bundle is broken")

    runtime = Runtime(make_settings(tmp_path, tiny_bundle_dir), factory)
    gateway = GrpcGateway(runtime, GatewayMetrics(), host="127.0.0.1", port=0)
    runtime.start()
    gateway.start()
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = pb_grpc.SearchStub(channel)
            check = health_pb2.HealthCheckRequest(service="clipsearch.v1.Search")
            assert health.Check(check, timeout=10).status == NOT_SERVING
            with pytest.raises(grpc.RpcError) as starting:
                stub.Search(pb.SearchRequest(text="a"), timeout=10)
            assert starting.value.code() is grpc.StatusCode.UNAVAILABLE
            assert from_rpc_error(starting.value).retry_after_s == 5
            go.set()
            assert not runtime.wait(30)
            assert health.Check(check, timeout=10).status == NOT_SERVING
            with pytest.raises(grpc.RpcError) as failed:
                stub.Search(pb.SearchRequest(text="a"), timeout=10)
            assert "the bundle is broken" in (failed.value.details() or "")
    finally:
        gateway.stop(grace=0)
        runtime.close()


def test_a_port_in_use_is_a_clear_error(gateway: GrpcGateway, rest: TestClient) -> None:
    from service.core.errors import ClipsearchError

    with pytest.raises(ClipsearchError) as taken:
        GrpcGateway(
            rest.app.state.runtime,  # type: ignore[attr-defined]
            GatewayMetrics(),
            host="127.0.0.1",
            port=gateway.port,
        )
    assert f"cannot listen for gRPC on 127.0.0.1:{gateway.port}" in taken.value.message
