"""Generated files are current: values.schema.json (from the documented values.yaml) and the
kustomize base (from the chart). Each generator also fails on a stale or undocumented input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.kube import CHART, ROOT, Tools

SCHEMA_SCRIPT = ROOT / "scripts" / "gen_values_schema.py"
BASE_SCRIPT = ROOT / "scripts" / "gen_k8s_base.py"


def generate(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_values_schema_is_current() -> None:
    result = generate(SCHEMA_SCRIPT, "--check")
    assert result.returncode == 0, result.stderr


def test_a_new_value_makes_the_schema_stale(tmp_path: Path) -> None:
    chart = tmp_path / "clipsearch"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text() + "\n# -- A new value.\nnewValue: 3\n")
    result = generate(SCHEMA_SCRIPT, "--check", "--chart", str(chart))
    assert result.returncode == 1 and "stale" in result.stderr
    assert generate(SCHEMA_SCRIPT, "--chart", str(chart)).returncode == 0
    assert '"newValue"' in (chart / "values.schema.json").read_text()
    assert generate(SCHEMA_SCRIPT, "--check", "--chart", str(chart)).returncode == 0


def test_an_undocumented_value_is_refused(tmp_path: Path) -> None:
    chart = tmp_path / "clipsearch"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("  pool: solo", "  pool: solo\n  prefetch: 4"))
    result = generate(SCHEMA_SCRIPT, "--chart", str(chart))
    assert result.returncode != 0
    assert "undocumented values" in result.stderr and "indexer.prefetch" in result.stderr


def test_the_kustomize_base_is_current(tools: Tools) -> None:
    result = generate(BASE_SCRIPT, "--check", "--helm", tools.helm)
    assert result.returncode == 0, result.stderr


def test_a_chart_change_makes_the_kustomize_base_stale(tools: Tools, tmp_path: Path) -> None:
    chart, base = tmp_path / "clipsearch", tmp_path / "base"
    shutil.copytree(CHART, chart)
    shutil.copytree(ROOT / "k8s" / "base", base)
    service = chart / "templates" / "gateway-service.yaml"
    service.write_text(service.read_text().replace("protocol: TCP", "protocol: UDP", 1))
    args = ("--helm", tools.helm, "--chart", str(chart), "--base", str(base))
    result = generate(BASE_SCRIPT, "--check", *args)
    assert result.returncode == 1 and "resources.yaml is stale" in result.stderr
    assert generate(BASE_SCRIPT, *args).returncode == 0
    assert "protocol: UDP" in (base / "resources.yaml").read_text()
