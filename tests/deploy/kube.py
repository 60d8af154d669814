"""The deployment checks' tools: real helm and kubectl, rendering, and schema validation.

``get_tools()`` runs scripts/get-deploy-tools.sh (cached after the first run) and fails loudly
when a tool cannot be had: CI must prove the chart renders, never skip it. ``validate()`` checks
every object against the Kubernetes OpenAPI schemas that kubernetes-validate ships (strict: an
unknown field fails), and the two CRD kinds the chart uses against the schemas in ``crds.py``;
any other kind fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import jsonschema
import kubernetes_validate
import typer.main
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from pydantic import BaseModel

from clipsearch.cli.main import app
from service.core.config import Settings
from tests.deploy.crds import CRD_SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "clipsearch"
GPU_PROD_VALUES = CHART / "values-gpu-prod.yaml"
OVERLAYS = ROOT / "k8s" / "overlays"
COMPOSE = ROOT / "deploy" / "compose.yaml"
COMPOSE_GPU = ROOT / "deploy" / "compose.gpu.yaml"
KUBE_VERSIONS = ("1.29", "1.32")
PREFIX = "CLIPSEARCH_"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")
# Values for variables that come from Secrets, to build Settings the way a pod would.
SECRET_STANDINS = {
    "CLIPSEARCH_AUTH__API_KEYS": "k1:search+ingest,k2:admin",
    "CLIPSEARCH_QDRANT__API_KEY": "qdrant-key",
    "REDIS_PASSWORD": "redis-password",
}
# Contents for variables that name a file mounted from a Secret (the gateway's API keys: one
# entry per line), written to a temporary file when Settings are built from an environment.
SECRET_FILE_STANDINS = {"CLIPSEARCH_AUTH__API_KEYS_FILE": "k1:search+ingest\nk2:admin\n"}

Doc = dict[str, Any]


@dataclass(frozen=True)
class Tools:
    helm: str
    kubectl: str
    compose_schema: Path


class RenderError(Exception):
    """helm or kubectl refused (the message is their stderr)."""


def get_tools() -> Tools:
    script = ROOT / "scripts" / "get-deploy-tools.sh"
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{script.name} could not provide helm/kubectl (exit {result.returncode}):\n"
            f"{result.stderr[-3000:]}"
        )
    paths = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Tools(paths["HELM"], paths["KUBECTL"], Path(paths["COMPOSE_SCHEMA"]))


def run(*cmd: str) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RenderError(f"{result.stdout.strip()}\n{result.stderr.strip()}".strip())
    return result.stdout


def helm_template(
    tools: Tools,
    *,
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    kube_version: str = KUBE_VERSIONS[-1],
    chart: Path = CHART,
) -> list[Doc]:
    args = [tools.helm, "template", "clipsearch", str(chart), "--namespace", "search"]
    args += ["--kube-version", kube_version]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return parse(run(*args))


def kustomize(tools: Tools, overlay: Path) -> list[Doc]:
    return parse(run(tools.kubectl, "kustomize", str(overlay)))


def parse(manifest: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def validate(docs: list[Doc], version: str) -> list[str]:
    """Every problem found, as ``Kind/name: message`` lines; empty means valid."""
    problems = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd = CRD_SCHEMAS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
        try:
            if crd is not None:
                jsonschema.Draft7Validator(crd).validate(doc)
            else:
                kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            problems.append(f"{name}: unknown kind {doc.get('apiVersion')} {doc.get('kind')}")
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            problems.append(f"{name}: {path}: {exc.message}")
    return problems


# -- reading rendered objects ----------------------------------------------------------------


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def component(doc: Doc) -> str:
    labels = doc["metadata"].get("labels", {})
    return str(labels.get("app.kubernetes.io/component", ""))


def workload(docs: list[Doc], kind: str, comp: str) -> Doc:
    (found,) = [d for d in docs if d["kind"] == kind and component(d) == comp]
    return found


def pod_spec(doc: Doc) -> dict[str, Any]:
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(doc["spec"]["template"]["spec"])


def pods(docs: list[Doc]) -> Iterator[tuple[Doc, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, pod_spec(doc)


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_env(docs: list[Doc], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: its ConfigMaps, then its env (Secrets as stand-ins,
    ``$(VAR)`` references expanded as the kubelet does)."""
    maps = by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]].get("data", {}))
    for item in container.get("env", []):
        value = item.get("value")
        if value is None:
            value = SECRET_STANDINS.get(item["name"], "from-a-secret")
        for name, known in env.items():
            value = value.replace(f"$({name})", known)
        env[item["name"]] = value
    return env


# -- the settings contract -------------------------------------------------------------------


def settings_field(variable: str) -> str | None:
    """The Settings field a ``CLIPSEARCH_*`` variable sets (``encoder.bulk.max_queue``), or None
    when pydantic-settings would ignore it (``extra="ignore"``: a typo is silently dropped)."""
    if not variable.startswith(PREFIX):
        return None
    model: type[BaseModel] = Settings
    parts = variable[len(PREFIX) :].lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if i == len(parts) - 1:
            return ".".join(parts)
        nested = field.annotation
        if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
            return None
        model = nested
    return None


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings as the process builds them from exactly this environment (a file mounted from a
    Secret replaced by a temporary one with stand-in content)."""
    clipsearch = {k: v for k, v in env.items() if k.startswith(PREFIX)}
    with tempfile.TemporaryDirectory() as folder:
        for name in clipsearch.keys() & SECRET_FILE_STANDINS.keys():
            standin = Path(folder) / name.lower()
            standin.write_text(SECRET_FILE_STANDINS[name])
            clipsearch[name] = str(standin)
        with mock.patch.dict(os.environ, clipsearch):  # restores the environment on exit
            for name in [n for n in os.environ if n.startswith(PREFIX) and n not in clipsearch]:
                del os.environ[name]
            return Settings()


def load_probe_module() -> ModuleType:
    """deploy/docker/probe.py (installed as clipsearch-probe in the images)."""
    path = ROOT / "deploy" / "docker" / "probe.py"
    spec = importlib.util.spec_from_file_location("clipsearch_probe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- command lines ---------------------------------------------------------------------------


def check_cli(argv: list[str]) -> None:
    """Parse ``clipsearch ARGV`` exactly as the CLI would, without running it."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    name, *rest = argv
    assert name in commands, f"`clipsearch {name}` is not a command"
    try:
        commands[name].make_context(name, list(rest))
    except Exception as exc:  # typer's own click: its usage errors have no public base class
        raise AssertionError(f"`clipsearch {' '.join(argv)}`: {exc}") from exc


def check_probe(argv: list[str]) -> None:
    parser = load_probe_module().build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`clipsearch-probe {' '.join(argv)}` does not parse") from exc
