"""The deployment and the code agree: every CLIPSEARCH_* variable the manifests set is a real
setting with a valid value, the ports are the ones the processes bind, and every command is a
real `clipsearch` (or `clipsearch-probe`) command line."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.conftest import VARIANTS, Renders
from tests.deploy.kube import (
    CHART,
    COMPOSE,
    COMPOSE_GPU,
    PREFIX,
    Doc,
    by_kind,
    check_cli,
    check_probe,
    component,
    container_env,
    containers,
    pods,
    settings_field,
    settings_from_env,
    workload,
)


def clipsearch_containers(docs: list[Doc]) -> list[tuple[Doc, dict[str, Any]]]:
    found = []
    for doc, spec in pods(docs):
        for container in containers(spec):
            if container["image"].startswith("clipsearch/"):
                found.append((doc, container))
    return found


def test_the_settings_lookup_knows_real_fields_from_typos() -> None:
    assert settings_field("CLIPSEARCH_ENCODER__BULK__MAX_QUEUE") == "encoder.bulk.max_queue"
    assert settings_field("CLIPSEARCH_WORKER__METRICS_PORT") == "worker.metrics_port"
    assert settings_field("CLIPSEARCH_ENCODER__MAX_QUEUE") is None  # it is per lane
    assert settings_field("CLIPSEARCH_QDRANT_URL") is None  # one underscore: ignored silently
    assert settings_field("CLIPSEARCH_PORT__X") is None


def test_every_variable_the_manifests_set_is_a_setting(manifests: list[Doc]) -> None:
    seen = set()
    for doc, container in clipsearch_containers(manifests):
        for name in container_env(manifests, container):
            if name.startswith(PREFIX):
                assert settings_field(name), f"{doc['metadata']['name']}: {name} is no setting"
                seen.add(name)
    assert {
        "CLIPSEARCH_QDRANT__URL",
        "CLIPSEARCH_BROKER__URL",
        "CLIPSEARCH_ENCODER__ENDPOINTS",
    } <= seen


def test_every_container_environment_makes_valid_settings(manifests: list[Doc]) -> None:
    for doc, container in clipsearch_containers(manifests):
        settings = settings_from_env(container_env(manifests, container))
        if doc["kind"] == "Pod":  # the helm test pod reads only its API key
            continue
        assert settings.data_dir.as_posix() == "/var/lib/clipsearch", doc["metadata"]["name"]
        assert settings.qdrant.url or component(doc) == "worker"


def test_the_chart_defaults_are_the_settings_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    defaults = settings_from_env({})  # the defaults, whatever this process's environment
    assert values["gateway"]["port"] == defaults.port == 8000
    assert values["gateway"]["grpc"]["port"] == defaults.grpc_port == 50052
    assert values["worker"]["port"] == defaults.worker.port == 50051
    assert values["worker"]["metricsPort"] == defaults.worker.metrics_port == 9100
    assert values["worker"]["trtBatch"] == defaults.encoder.trt_batch
    lanes = values["worker"]["interactive"], values["worker"]["bulk"]
    for lane, settings in zip(
        lanes, (defaults.encoder.interactive, defaults.encoder.bulk), strict=True
    ):
        assert lane["maxBatchSize"] == settings.max_batch_size
        assert lane["maxWaitMs"] == settings.max_wait_ms
        assert lane["maxQueue"] == settings.max_queue
    assert values["config"]["maxUploadBytes"] == defaults.limits.max_upload_bytes


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


@pytest.mark.parametrize("grpc", [False, True])
def test_the_gateway_binds_the_ports_its_pod_and_service_declare(
    renders: Renders, grpc: bool
) -> None:
    docs = renders.chart() if grpc else renders.chart(sets=("gateway.grpc.enabled=false",))
    gateway = workload(docs, "Deployment", "gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    settings = settings_from_env(container_env(docs, container))
    assert settings.host == "0.0.0.0"
    assert settings.grpc_port == (50052 if grpc else 0)  # disabled: not listening at all
    expected = {"http": settings.port, **({"grpc": settings.grpc_port} if grpc else {})}
    assert _ports(container) == expected
    service = by_kind(docs, "Service")[gateway["metadata"]["name"]]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == expected


def test_workers_bind_the_declared_ports_and_clients_list_every_worker(
    manifests: list[Doc],
) -> None:
    statefulset = workload(manifests, "StatefulSet", "worker")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    worker = settings_from_env(container_env(manifests, container)).worker
    assert _ports(container) == {"grpc": worker.port, "metrics": worker.metrics_port}
    assert worker.host == "0.0.0.0"  # the pod network (the default is loopback)
    name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    replicas = statefulset["spec"]["replicas"]
    expected = [f"{name}-{i}.{service}:{worker.port}" for i in range(replicas)]
    for client in ("gateway", "indexer"):
        (deployment,) = [workload(manifests, "Deployment", client)]
        (client_container,) = deployment["spec"]["template"]["spec"]["containers"]
        settings = settings_from_env(container_env(manifests, client_container))
        assert settings.encoder.endpoints == expected, client


def test_the_embedded_gateway_configures_nothing_remote(renders: Renders) -> None:
    docs = renders.chart(sets=VARIANTS["embedded"])
    (container,) = workload(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    settings = settings_from_env(container_env(docs, container))
    assert settings.embedded_store and settings.in_process_encoder and settings.in_process_jobs


def test_clients_reach_qdrant_and_redis_through_their_services(manifests: list[Doc]) -> None:
    services = {
        component(s): s
        for s in by_kind(manifests, "Service").values()
        if s["spec"].get("clusterIP") != "None"
    }
    gateway = workload(manifests, "Deployment", "gateway")["spec"]["template"]["spec"]
    settings = settings_from_env(container_env(manifests, gateway["containers"][0]))
    qdrant_ports = {p["name"]: p["port"] for p in services["qdrant"]["spec"]["ports"]}
    assert (
        settings.qdrant.url
        == f"http://{services['qdrant']['metadata']['name']}:{qdrant_ports['http']}"
    )
    redis = services["redis"]
    assert settings.broker.url is not None
    assert settings.broker.url.split("@")[-1].removeprefix("redis://") == (
        f"{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0"
    )


def test_every_command_is_a_real_command_line(manifests: list[Doc]) -> None:
    for _, container in clipsearch_containers(manifests):
        assert container["command"] == ["clipsearch"] or container["command"] == [
            "clipsearch-probe"
        ]
        if container["command"] == ["clipsearch"]:
            check_cli(container["args"])
        else:
            check_probe(container["args"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = container.get(probe, {}).get("exec", {}).get("command")
            if command:
                assert command[0] == "clipsearch-probe"
                check_probe(command[1:])
    commands = {
        (container.get("args") or ["?"])[0] for _, container in clipsearch_containers(manifests)
    }
    assert {"serve", "worker", "indexer"} <= commands


def test_a_wrong_command_line_is_caught() -> None:
    check_cli(["indexer", "--pool", "threads", "--concurrency", "4", "--name", "indexer@%h"])
    with pytest.raises(AssertionError, match="No such option"):
        check_cli(["serve", "--allow-anonymus"])
    with pytest.raises(AssertionError, match="not a command"):
        check_cli(["gateway"])
    with pytest.raises(AssertionError, match="does not parse"):
        check_probe(["gpu"])


def _compose(path: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_compose_sets_only_real_settings_with_valid_values() -> None:
    for path in (COMPOSE, COMPOSE_GPU):
        for name, service in _compose(path)["services"].items():
            env = {k: str(v) for k, v in service.get("environment", {}).items()}
            for variable in env:
                if variable.startswith(PREFIX):
                    assert settings_field(variable), f"{path.name} {name}: {variable}"
            # ${VAR:-default} is compose interpolation: validate the default.
            resolved = {
                k: v.split(":-", 1)[-1].rstrip("}") if "${" in v else v for k, v in env.items()
            }
            settings_from_env(resolved)


def test_compose_runs_real_commands_on_the_settings_ports() -> None:
    services = _compose(COMPOSE)["services"]
    assert set(services) == {"gateway", "worker", "indexer", "redis", "qdrant"}
    for name in ("gateway", "worker", "indexer"):
        check_cli(services[name]["command"])
    defaults = settings_from_env({})  # the defaults, whatever this process's environment
    gateway_env = services["gateway"]["environment"]
    assert int(gateway_env["CLIPSEARCH_PORT"]) == defaults.port
    assert services["gateway"]["ports"] == [f"127.0.0.1:{defaults.port}:{defaults.port}"]
    worker_env = services["worker"]["environment"]
    assert int(worker_env["CLIPSEARCH_WORKER__PORT"]) == defaults.worker.port
    assert int(worker_env["CLIPSEARCH_WORKER__METRICS_PORT"]) == defaults.worker.metrics_port
    client = settings_from_env(
        dict(services["indexer"]["environment"], CLIPSEARCH_LOG_LEVEL="INFO")
    )
    assert client.encoder.endpoints == [f"worker:{defaults.worker.port}"]
    assert client.qdrant.url == "http://qdrant:6333"
    assert client.broker.url == "redis://redis:6379/0"
