"""The chart lints, every rendering validates against Kubernetes 1.29 and 1.32, and broken values
or manifests fail those same checks."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import VARIANTS, Renders
from tests.deploy.kube import (
    CHART,
    GPU_PROD_VALUES,
    KUBE_VERSIONS,
    Doc,
    RenderError,
    Tools,
    by_kind,
    helm_template,
    run,
    validate,
    workload,
)


@pytest.mark.parametrize("values", [(), (GPU_PROD_VALUES,)], ids=["default", "gpu-prod"])
def test_helm_lint_strict_passes(tools: Tools, values: tuple[Path, ...]) -> None:
    args = [tools.helm, "lint", "--strict", str(CHART)]
    for path in values:
        args += ["-f", str(path)]
    assert "0 chart(s) failed" in run(*args)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [(), (GPU_PROD_VALUES,)], ids=["default", "gpu-prod"])
def test_the_chart_renders_valid_objects(
    renders: Renders, values: tuple[Path, ...], version: str
) -> None:
    docs = renders.chart(*values, version=version)
    assert validate(docs, version) == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_other_value_combinations_render_valid_objects(
    renders: Renders, variant: str, version: str
) -> None:
    docs = renders.chart(sets=VARIANTS[variant], version=version)
    assert validate(docs, version) == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("overlay", ["cpu-dev", "gpu-prod"])
def test_the_kustomize_overlays_render_valid_objects(
    renders: Renders, overlay: str, version: str
) -> None:
    docs = renders.overlay(overlay)
    assert validate(docs, version) == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_the_kubernetes_validate_command_takes_the_rendering_on_stdin(
    renders: Renders, version: str
) -> None:
    """The pipe an operator would run: `helm template ... | kubernetes-validate --strict -`. (The
    checks above call the same validator as a library: the command only warns on unknown kinds.)"""

    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]

    def pipe(docs: list[Doc]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "-k", f"{version}.0", "-"],
            input=yaml.safe_dump_all(docs),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    docs = renders.chart(version=version)
    result = pipe(docs)
    assert result.returncode == 0 and result.stdout == "", result.stdout
    broken = copy.deepcopy(docs)
    workload(broken, "Deployment", "indexer")["spec"]["template"]["spec"]["contaners"] = []
    result = pipe(broken)
    assert result.returncode == 1 and "'contaners' was unexpected" in result.stdout


def test_the_production_values_use_both_custom_resources(renders: Renders) -> None:
    kinds = {d["kind"] for d in renders.chart(GPU_PROD_VALUES)}
    assert {"ScaledObject", "ServiceMonitor", "HorizontalPodAutoscaler", "Ingress"} <= kinds


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("worker.gpus=one", "worker.gpus: Invalid type. Expected: integer"),
        ("worker.gpus=2", "worker.gpus: Must be less than or equal to 1"),
        ("worker.gpu=1", "Additional property gpu is not allowed"),
        ("worker.provider=tpu", "worker.provider: worker.provider must be one of"),
        ("config.logLevel=LOUD", "config.logLevel must be one of"),
        ("config.extraEnv.QDRANT_URL=x", "Does not match pattern"),
        ("gateway.image.digest=latest", "gateway.image.digest: Does not match pattern"),
    ],
)
def test_the_values_schema_rejects_wrong_values(tools: Tools, setting: str, complaint: str) -> None:
    with pytest.raises(RenderError, match="schema") as error:
        helm_template(tools, sets=(setting,))
    assert complaint in str(error.value)
    with pytest.raises(RenderError, match="schema"):
        run(tools.helm, "lint", "--strict", str(CHART), "--set", setting)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("gateway.ingress.enabled=true", "auth.existingSecret="), "set auth.existingSecret"),
        (("auth.existingSecret=",), "auth.existingSecret is required"),
        (
            ("gateway.ingress.enabled=true", "auth.allowAnonymous=true"),
            "refuses auth.allowAnonymous",
        ),
        (
            ("gateway.adminIngress.enabled=true", "auth.allowAnonymous=true"),
            "refuses auth.allowAnon",
        ),
        (("redis.enabled=false", "indexer.enabled=true"), "the indexers need Redis"),
    ],
)
def test_unsafe_or_incomplete_combinations_refuse_to_render(
    tools: Tools, settings: tuple[str, ...], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        helm_template(tools, sets=settings)


def test_a_misspelt_field_fails_validation(renders: Renders) -> None:
    docs = copy.deepcopy(renders.chart())
    deployment = workload(docs, "Deployment", "gateway")
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    problems = validate(docs, "1.29")
    assert problems == [
        f"Deployment/{deployment['metadata']['name']}: spec: Additional properties are not "
        "allowed ('replica' was unexpected)"
    ]


def test_a_wrong_type_fails_validation(renders: Renders) -> None:
    docs = copy.deepcopy(renders.chart())
    statefulset = workload(docs, "StatefulSet", "worker")
    statefulset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    (problem,) = validate(docs, "1.32")
    assert "containerPort" in problem and "'grpc' is not of type 'integer'" in problem


def test_an_unknown_kind_fails_validation(renders: Renders) -> None:
    docs = [*renders.chart(), {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}}]
    assert validate(docs, "1.32") == ["Widget/None: unknown kind example.com/v1 Widget"]


def test_a_custom_resource_with_a_wrong_field_fails_validation(renders: Renders) -> None:
    docs = copy.deepcopy(renders.chart(GPU_PROD_VALUES))
    scaled = next(iter(by_kind(docs, "ScaledObject").values()))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 20  # KEDA wants strings
    monitor = next(iter(by_kind(docs, "ServiceMonitor").values()))
    monitor["spec"]["endpoints"][0]["interval"] = "often"
    problems = validate(docs, "1.29")
    assert len(problems) == 2
    assert "triggers.0.metadata.listLength: 20 is not of type 'string'" in problems[0]
    assert "endpoints.0.interval: 'often' does not match" in problems[1]


def test_a_broken_template_fails_lint(tools: Tools, tmp_path: Path) -> None:
    chart = tmp_path / "clipsearch"
    shutil.copytree(CHART, chart)
    service = chart / "templates" / "gateway-service.yaml"
    service.write_text(service.read_text().replace("{{- end }}", "", 1))
    with pytest.raises(RenderError, match=r"gateway-service\.yaml"):
        run(tools.helm, "lint", "--strict", str(chart))


def test_every_rendering_has_its_workloads(manifests: list[Doc]) -> None:
    kinds = {
        (d["kind"], d["metadata"].get("labels", {}).get("app.kubernetes.io/component"))
        for d in manifests
    }
    for expected in [
        ("Deployment", "gateway"),
        ("StatefulSet", "worker"),
        ("Deployment", "indexer"),
        ("StatefulSet", "qdrant"),
        ("Deployment", "redis"),
    ]:
        assert expected in kinds
