"""What the rendered objects say: GPUs, probes, security, rolling on config changes, isolation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.core.tasks import INDEX_QUEUE
from tests.deploy.conftest import Renders
from tests.deploy.kube import (
    GPU_PROD_VALUES,
    Doc,
    by_kind,
    component,
    containers,
    pods,
    workload,
)

# repository:tag with a real version (never latest), optionally @sha256:<digest>.
PINNED = re.compile(r"^[a-z0-9./-]+:v?\d+\.\d+\.\d+[A-Za-z0-9.-]*(@sha256:[a-f0-9]{64})?$")


def _worker(docs: list[Doc]) -> dict[str, Any]:
    spec = workload(docs, "StatefulSet", "worker")["spec"]["template"]["spec"]
    return dict(spec)


@pytest.mark.parametrize(
    ("rendering", "gpus"), [("default", 1), ("gpu-prod", 1), ("cpu-worker", 0)]
)
def test_workers_get_their_gpu_limit(renders: Renders, rendering: str, gpus: int) -> None:
    docs = {
        "default": renders.chart(),
        "gpu-prod": renders.chart(GPU_PROD_VALUES),
        "cpu-worker": renders.chart(sets=("worker.gpus=0",)),
    }[rendering]
    (container,) = _worker(docs)["containers"]
    limits = container["resources"]["limits"]
    assert limits.get("nvidia.com/gpu", 0) == gpus
    assert container["image"].startswith(
        "clipsearch/worker-gpu:" if gpus else "clipsearch/worker-cpu:"
    )


def test_gpu_workers_are_scheduled_on_gpu_nodes_only(renders: Renders) -> None:
    for docs in (renders.chart(GPU_PROD_VALUES), renders.overlay("gpu-prod")):
        spec = _worker(docs)
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu_dev = _worker(renders.overlay("cpu-dev"))
    assert "nvidia.com/gpu" not in cpu_dev["containers"][0]["resources"]["limits"]


def test_every_long_running_container_has_probes_and_resources(manifests: list[Doc]) -> None:
    for doc, spec in pods(manifests):
        for container in containers(spec):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where
            if doc["kind"] != "Pod":  # the helm test pod runs once
                assert "livenessProbe" in container, where
                assert "readinessProbe" in container or component(doc) == "indexer", where


def test_the_gateway_probes_its_health_endpoints(manifests: list[Doc]) -> None:
    from service.gateway.routers.health import router

    routes = {route.path for route in router.routes}  # type: ignore[attr-defined]
    (container,) = workload(manifests, "Deployment", "gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert {"/health/live", "/health/ready"} <= routes


def test_the_worker_readiness_follows_its_grpc_health(manifests: list[Doc]) -> None:
    (container,) = _worker(manifests)["containers"]
    probe = ["clipsearch-probe", "worker", "--timeout", "3"]
    assert container["readinessProbe"]["exec"]["command"] == probe
    assert container["startupProbe"]["exec"]["command"] == probe
    assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}


def test_no_container_runs_as_root(manifests: list[Doc]) -> None:
    for doc, spec in pods(manifests):
        pod = spec.get("securityContext", {})
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, doc["metadata"]["name"]
        for container in containers(spec):
            where = f"{doc['metadata']['name']}/{container['name']}"
            own = container.get("securityContext", {})
            effective = {**pod, **own}
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("runAsUser", 0) != 0, where
            assert own.get("allowPrivilegeEscalation") is False, where
            assert own.get("readOnlyRootFilesystem") is True, where
            assert own.get("capabilities") == {"drop": ["ALL"]}, where
            assert not own.get("privileged", False), where


def test_no_pod_gets_a_service_account_token(manifests: list[Doc]) -> None:
    for doc, spec in pods(manifests):
        assert spec.get("automountServiceAccountToken") is False, doc["metadata"]["name"]


def test_every_image_is_pinned_to_a_version(manifests: list[Doc]) -> None:
    for _, spec in pods(manifests):
        for container in containers(spec):
            assert PINNED.match(container["image"]), container["image"]


@pytest.mark.parametrize(
    ("change", "rolled", "kept"),
    [
        ("config.logLevel=DEBUG", {"gateway", "worker", "indexer"}, set()),
        ("worker.interactive.maxBatchSize=8", {"worker"}, {"gateway", "indexer"}),
        ("gateway.extraEnv.CLIPSEARCH_LIMITS__MAX_LIMIT=50", {"gateway"}, {"worker", "indexer"}),
        ("config.collection=photos", {"gateway", "indexer"}, {"worker"}),
    ],
)
def test_config_changes_roll_exactly_the_pods_that_read_them(
    renders: Renders, change: str, rolled: set[str], kept: set[str]
) -> None:
    def checksums(docs: list[Doc]) -> dict[str, str]:
        return {
            component(d): d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in docs
            if d["kind"] in ("Deployment", "StatefulSet") and component(d) in rolled | kept
        }

    before, after = checksums(renders.chart()), checksums(renders.chart(sets=(change,)))
    assert {c for c in before if before[c] != after[c]} == rolled


def test_kustomize_names_configmaps_by_content(renders: Renders) -> None:
    """Under kustomize the ConfigMap name carries a content hash: a changed setting rolls pods."""
    for overlay in ("cpu-dev", "gpu-prod"):
        docs = renders.overlay(overlay)
        maps = by_kind(docs, "ConfigMap")
        for _, spec in pods(docs):
            for container in containers(spec):
                for source in container.get("envFrom", []):
                    name = source["configMapRef"]["name"]
                    assert name in maps and re.search(r"-[a-z0-9]{10}$", name), name
    dev = by_kind(renders.overlay("cpu-dev"), "ConfigMap")
    prod = by_kind(renders.overlay("gpu-prod"), "ConfigMap")
    assert not set(dev) & set(prod)


def test_the_worker_service_is_headless_for_client_side_balancing(manifests: list[Doc]) -> None:
    statefulset = workload(manifests, "StatefulSet", "worker")
    service = by_kind(manifests, "Service")[statefulset["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}


def test_only_the_gateway_and_indexers_reach_the_workers(manifests: list[Doc]) -> None:
    policies = {component(p): p["spec"] for p in by_kind(manifests, "NetworkPolicy").values()}
    worker = policies["worker"]
    grpc_rule = next(
        r for r in worker["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"]
    )
    (peer,) = grpc_rule["from"]
    expression = peer["podSelector"]["matchExpressions"][0]
    assert expression["key"] == "app.kubernetes.io/component"
    assert sorted(expression["values"]) == ["gateway", "indexer"]
    assert "namespaceSelector" not in peer
    assert all("from" in rule for rule in worker["ingress"])
    assert policies["indexer"]["ingress"] == []
    (gateway_rule,) = policies["gateway"]["ingress"]
    assert "from" not in gateway_rule  # the one component reachable from anywhere
    for name in ("qdrant", "redis"):
        assert all("from" in rule for rule in policies[name]["ingress"]), name


def test_keda_scales_indexers_on_the_celery_queue(renders: Renders) -> None:
    docs = renders.chart(GPU_PROD_VALUES)
    (scaled,) = by_kind(docs, "ScaledObject").values()
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == INDEX_QUEUE
    assert trigger["metadata"]["address"] == "clipsearch-redis.search.svc:6379"
    assert trigger["metadata"]["passwordFromEnv"] == "REDIS_PASSWORD"
    indexer = workload(docs, "Deployment", "indexer")
    assert scaled["spec"]["scaleTargetRef"]["name"] == indexer["metadata"]["name"]
    assert "replicas" not in indexer["spec"]  # KEDA's HPA owns it
    env = {e["name"] for e in indexer["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "REDIS_PASSWORD" in env


def test_service_monitors_scrape_the_metrics_ports(renders: Renders) -> None:
    docs = renders.chart(GPU_PROD_VALUES)
    services = {component(s): s for s in by_kind(docs, "Service").values() if component(s)}
    for monitor in by_kind(docs, "ServiceMonitor").values():
        target = services[component(monitor)]
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= target["metadata"]["labels"].items()
        )
        ports = {p["name"] for p in target["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_secrets_come_from_existing_secrets_only(renders: Renders) -> None:
    docs = renders.chart(GPU_PROD_VALUES)
    assert not by_kind(docs, "Secret")
    gateway = workload(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in gateway["env"] if "valueFrom" in e}
    assert refs["CLIPSEARCH_QDRANT__API_KEY"] == {"name": "clipsearch-qdrant", "key": "api-key"}
    assert "CLIPSEARCH_AUTH__API_KEYS" not in refs  # a mounted file (test_security.py)
    assert gateway["args"] == ["serve"]  # keys, so no --allow-anonymous


def test_the_helm_test_hook_runs_a_search_round_trip(renders: Renders) -> None:
    from service.gateway.routers.search import router

    docs = renders.chart(GPU_PROD_VALUES)
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    gateway = workload(docs, "Deployment", "gateway")
    service = by_kind(docs, "Service")[gateway["metadata"]["name"]]
    port = service["spec"]["ports"][0]["port"]
    assert container["command"] == ["clipsearch-probe"]
    assert container["args"][:2] == ["search", f"http://{service['metadata']['name']}:{port}"]
    assert container["env"][0]["name"] == "CLIPSEARCH_AUTH__API_KEYS"
    posts = {r.path for r in router.routes if "POST" in r.methods}  # type: ignore[attr-defined]
    assert "/v1/search" in posts  # where clipsearch-probe search posts (test_probe.py runs it)


def test_disruption_budgets_and_autoscaling_in_production(renders: Renders) -> None:
    for docs in (renders.chart(GPU_PROD_VALUES), renders.overlay("gpu-prod")):
        budgets = {
            component(p) or p["metadata"]["name"].rsplit("-", 1)[-1]
            for p in by_kind(docs, "PodDisruptionBudget").values()
        }
        assert {"gateway", "worker", "qdrant"} <= budgets
        (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
        gateway = workload(docs, "Deployment", "gateway")
        assert hpa["spec"]["scaleTargetRef"]["name"] == gateway["metadata"]["name"]
        assert "replicas" not in gateway["spec"]
