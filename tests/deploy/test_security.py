"""Secure defaults of the chart (issue 17): API keys from an existing Secret mounted as a file, no
anonymous access unless a value asks for it, the admin API and dashboard off the public Ingress,
NetworkPolicies on, and a gateway whose start-up failures reach Kubernetes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clipsearch.bootstrap import build_components
from service.core.config import AuthSettings, Settings
from service.gateway.app import create_app
from tests.deploy.conftest import RENDERINGS, VARIANTS, Renders
from tests.deploy.kube import (
    GPU_PROD_VALUES,
    ROOT,
    Doc,
    by_kind,
    component,
    container_env,
    load_probe_module,
    settings_from_env,
    workload,
)

ADMIN_PREFIXES = ("/v1/admin", "/admin")
# What the gateway serves outside its OpenAPI schema (docs, the dashboard, Prometheus).
UNLISTED_PATHS = ("/docs", "/redoc", "/openapi.json", "/metrics", "/admin", "/admin/static/app.css")


def _gateway(docs: list[Doc]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = workload(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def _keys_volume(spec: dict[str, Any], container: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The Secret volume behind CLIPSEARCH_AUTH__API_KEYS_FILE, and the key it mounts."""
    env = {e["name"]: e for e in container.get("env", [])}
    path = Path(env["CLIPSEARCH_AUTH__API_KEYS_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == path.name]
    return volume["secret"], item["key"]


def prefix_matches(prefix: str, path: str) -> bool:
    """Kubernetes `pathType: Prefix`: element-wise on `/`-separated segments."""
    if prefix == "/":
        return True
    want = prefix.rstrip("/").split("/")
    return path.split("/")[: len(want)] == want


def _ingress_paths(ingress: Doc) -> set[str]:
    paths = set()
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            assert entry["pathType"] == "Prefix"
            paths.add(entry["path"])
    return paths


def _served_paths() -> list[str]:
    """Every path the gateway serves: its OpenAPI paths (templates filled in) and the rest."""
    app = create_app(Settings(), build_components)  # never started: routes only
    listed = [p.replace("{", "").replace("}", "") for p in app.openapi()["paths"]]
    return [*listed, *UNLISTED_PATHS]


# -- keys, and no anonymous access -----------------------------------------------------------


def test_every_rendering_reads_keys_from_the_secret_and_never_serves_anonymously(
    manifests: list[Doc],
) -> None:
    spec, container = _gateway(manifests)
    assert container["command"] == ["clipsearch"] and container["args"] == ["serve"]
    secret, key = _keys_volume(spec, container)
    assert (secret["secretName"], key) == ("clipsearch-api-keys", "api-keys")
    env = {e["name"] for e in container.get("env", [])}
    assert "CLIPSEARCH_AUTH__API_KEYS" not in env  # the file only: no key in the pod spec's env


def test_the_default_values_name_a_secret_and_refuse_anonymous_access() -> None:
    import yaml

    values = yaml.safe_load((ROOT / "deploy/helm/clipsearch/values.yaml").read_text())
    assert values["auth"]["allowAnonymous"] is False
    assert values["auth"]["existingSecret"]
    assert values["networkPolicy"]["enabled"] is True
    assert values["gateway"]["ingress"]["exposeAdmin"] is False


def test_another_secret_and_key_are_mounted_as_named(renders: Renders) -> None:
    docs = renders.chart(sets=("auth.existingSecret=team-keys", "auth.secretKey=lines"))
    secret, key = _keys_volume(*_gateway(docs))
    assert (secret["secretName"], key) == ("team-keys", "lines")


def test_anonymous_access_only_when_a_value_enables_it(renders: Renders) -> None:
    spec, container = _gateway(renders.chart(sets=VARIANTS["anonymous"]))
    assert container["args"] == ["serve", "--allow-anonymous"]
    assert "CLIPSEARCH_AUTH__API_KEYS_FILE" not in {e["name"] for e in container.get("env", [])}
    assert all("secret" not in v for v in spec["volumes"])


def test_the_mounted_keys_file_gives_the_gateway_its_keys(renders: Renders) -> None:
    """The gateway's Settings from the rendered environment, the Secret's file holding one
    `key:scopes` entry per line (tests/deploy/kube.py's stand-in)."""
    if "api_keys_file" not in AuthSettings.model_fields:
        pytest.skip("the gateway's CLIPSEARCH_AUTH__API_KEYS_FILE setting has not landed yet")
    docs = renders.chart()
    _, container = _gateway(docs)
    settings = settings_from_env(container_env(docs, container))
    assert len(settings.auth.api_keys) == 2  # k1 and k2, however the settings store them


def test_the_helm_test_probe_takes_its_key_from_the_secret_lines(renders: Renders) -> None:
    """The `helm test` pod gets the Secret's content (one entry a line) in its environment."""
    (pod,) = by_kind(renders.chart(), "Pod").values()
    (env,) = pod["spec"]["containers"][0]["env"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "clipsearch-api-keys", "key": "api-keys"}
    probe = load_probe_module()
    lines = "# ops keys\nadmin-key:admin\n\nscoped:search@media\nall:search+ingest:ci\n"
    assert probe.search_key(lines) == "all"  # search on every collection first
    assert probe.search_key("admin-key:admin\nscoped:search@media\n") == "scoped"
    assert probe.search_key("admin-key:admin,plain:search") == "plain"  # the variable's format
    with pytest.raises(probe.ProbeFailed, match="no API key with the search scope"):
        probe.search_key("admin-key:admin\n")


# -- the admin API off the public Ingress ----------------------------------------------------


def test_the_public_ingress_routes_every_api_path_but_admin(renders: Renders) -> None:
    (ingress,) = by_kind(renders.chart(GPU_PROD_VALUES), "Ingress").values()
    prefixes = _ingress_paths(ingress)
    assert "/" not in prefixes
    for path in _served_paths():
        routed = any(prefix_matches(p, path) for p in prefixes)
        admin = any(prefix_matches(p, path) for p in ADMIN_PREFIXES)
        if admin or path == "/metrics":
            assert not routed, f"{path} is reachable through the public Ingress"
        else:
            assert routed, f"{path} is served but not routed by the public Ingress"
    assert any(p.startswith("/v1/admin/") for p in _served_paths())  # the check saw admin paths


def test_the_prefix_semantics_are_kubernetes_own() -> None:
    assert prefix_matches("/v1/items", "/v1/items/abc")
    assert not prefix_matches("/v1/items", "/v1/itemsx")
    assert not prefix_matches("/admin", "/v1/admin/reindex")
    assert prefix_matches("/", "/v1/admin/reindex")


def test_admin_on_the_public_ingress_only_when_asked(renders: Renders) -> None:
    sets = ("gateway.ingress.enabled=true", "gateway.ingress.exposeAdmin=true")
    (ingress,) = by_kind(renders.chart(sets=sets), "Ingress").values()
    assert _ingress_paths(ingress) == {"/"}


def test_the_admin_ingress_is_a_second_one_with_its_own_class(renders: Renders) -> None:
    sets = (
        *VARIANTS["options"],
        "gateway.adminIngress.className=internal",
        "gateway.ingress.className=public",
    )
    ingresses = by_kind(renders.chart(sets=sets), "Ingress")
    public, admin = ingresses["clipsearch-gateway"], ingresses["clipsearch-gateway-admin"]
    assert public["spec"]["ingressClassName"] == "public"
    assert admin["spec"]["ingressClassName"] == "internal"
    assert _ingress_paths(admin) == {"/"}
    assert not any(prefix_matches(p, "/v1/admin/rollback") for p in _ingress_paths(public))
    assert [h["host"] for h in admin["spec"]["rules"]] == ["clipsearch-admin.internal.example.com"]


# -- NetworkPolicy, and start-up failures ----------------------------------------------------


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_network_policies_are_on_in_every_rendering(renders: Renders, rendering: str) -> None:
    docs = RENDERINGS[rendering](renders)
    covered = {component(p) for p in by_kind(docs, "NetworkPolicy").values()}
    assert {"gateway", "worker", "indexer", "qdrant", "redis"} <= covered


def test_the_gateway_runs_unwrapped_and_logs_its_exit_reason(manifests: list[Doc]) -> None:
    _, container = _gateway(manifests)
    assert container["command"] == ["clipsearch"]  # no shell whose exit status hides ours
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CLIPSEARCH_HOST": "0.0.0.0"}, "refusing to serve on 0.0.0.0 without API keys"),
        ({"CLIPSEARCH_BUNDLE": "/nonexistent/bundle"}, "/nonexistent/bundle"),
    ],
    ids=["exposed-without-keys", "missing-bundle"],
)
def test_a_start_up_failure_exits_non_zero_with_its_reason(
    tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    """`clipsearch serve` as the pod runs it: a configuration it cannot serve ends the process
    (the kubelet restarts it and shows the reason) instead of a gateway that answers 503."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    clean.update({"CLIPSEARCH_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1", **env})
    result = subprocess.run(
        [sys.executable, "-m", "clipsearch", "serve"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert reason in result.stderr
