"""Every gateway replica answers alike (issue 17, item 1): the chart's defaults and the production
renderings give all gateway pods one Redis (job and rollout records, rollout leases), one Qdrant
server and one ReadWriteMany data volume (thumbnails, golden sets); the chart refuses more than
one gateway without any of them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.conftest import Renders
from tests.deploy.kube import (
    GPU_PROD_VALUES,
    Doc,
    RenderError,
    by_kind,
    container_env,
    containers,
    workload,
)


def _gateway(docs: list[Doc]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = workload(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    (container,) = [c for c in containers(spec) if c["name"] == "gateway"]
    return spec, container


@pytest.mark.parametrize("rendering", ["default", "chart-gpu-prod", "kustomize-gpu-prod"])
def test_gateway_replicas_share_redis_qdrant_and_one_rwx_data_volume(
    renders: Renders, rendering: str
) -> None:
    docs = {
        "default": lambda: renders.chart(),
        "chart-gpu-prod": lambda: renders.chart(GPU_PROD_VALUES),
        "kustomize-gpu-prod": lambda: renders.overlay("gpu-prod"),
    }[rendering]()
    spec, container = _gateway(docs)
    env = container_env(docs, container)
    assert env["CLIPSEARCH_BROKER__URL"].startswith(("redis://", "rediss://"))
    assert env["CLIPSEARCH_QDRANT__URL"].startswith(("http://", "https://"))
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "data"]
    assert mount["mountPath"] == env["CLIPSEARCH_DATA_DIR"] and not mount.get("readOnly")
    (volume,) = [v for v in spec["volumes"] if v["name"] == "data"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    claims = by_kind(docs, "PersistentVolumeClaim")
    if claim in claims:  # the chart's own claim; an existing one is the operator's
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    else:
        assert rendering == "chart-gpu-prod" and claim == "clipsearch-shared"


def test_the_default_chart_runs_two_gateways(renders: Renders) -> None:
    deployment = workload(renders.chart(), "Deployment", "gateway")
    assert deployment["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("sets", "needs"),
    [
        (("redis.enabled=false", "indexer.enabled=false"), "needs Redis"),
        (("qdrant.enabled=false",), "needs a Qdrant server"),
        (("sharedData.create=false",), "needs a shared data volume"),
        (("sharedData.create=false", "gateway.autoscaling.enabled=true"), "shared data volume"),
    ],
)
def test_more_than_one_gateway_without_shared_state_is_refused(
    renders: Renders, sets: tuple[str, ...], needs: str
) -> None:
    with pytest.raises(RenderError, match=needs):
        renders.chart(sets=sets)
    # One gateway is fine without them (nothing to share).
    one = ("gateway.replicas=1", "gateway.autoscaling.enabled=false")
    assert renders.chart(sets=(*sets, *one))
