"""The Dockerfiles and compose files, checked without a Docker engine: pinned bases, a CUDA major
that matches onnxruntime-gpu, non-root users, health checks and commands that exist, bundles
baked where the settings look, and compose files valid against the Compose spec."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.kube import (
    COMPOSE,
    COMPOSE_GPU,
    ROOT,
    Tools,
    check_cli,
    check_probe,
    settings_field,
    settings_from_env,
)

DOCKER = ROOT / "deploy" / "docker"
IMAGE_ARG = re.compile(r"^[a-z0-9./-]+:v?\d+\.\d+\.\d+[A-Za-z0-9.-]*(@sha256:[a-f0-9]{64})?$")
# (image target, Dockerfile, ports it must expose)
DEFAULTS = settings_from_env({})  # the defaults, whatever this process's environment
TARGETS = {
    "gateway": ("Dockerfile", {DEFAULTS.port, DEFAULTS.grpc_port}),
    "worker-cpu": ("Dockerfile", {DEFAULTS.worker.port, DEFAULTS.worker.metrics_port}),
    "indexer": ("Dockerfile", set()),
    "worker-gpu": ("worker-gpu.Dockerfile", {DEFAULTS.worker.port, DEFAULTS.worker.metrics_port}),
}


@dataclass
class Stage:
    base: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, name: str) -> str | None:
        found = [arg for op, arg in self.instructions if op == name]
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults, and each stage with what it inherits from the stage it builds on."""
    text = re.sub(r"\\\n", " ", path.read_text())
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        op, arg = op.upper(), arg.strip()
        if op == "FROM":
            base, _, name = arg.partition(" AS ")
            parent = stages.get(base)
            stage = Stage(base=base)
            if parent is not None:  # the parent's ARGs, for the instructions inherited with it
                stage.args = dict(parent.args)
                stage.env = dict(parent.env)
                stage.instructions = list(parent.instructions)
            stages[name.strip() or base] = stage
        elif op == "ARG" and stage is None:
            key, _, value = arg.partition("=")
            global_args[key] = value
        elif stage is not None:
            if op == "ARG":
                key, _, value = arg.partition("=")
                stage.args[key] = value
            if op == "ENV":
                for item in shlex.split(arg):
                    key, _, value = item.partition("=")
                    stage.env[key] = value
            stage.instructions.append((op, arg))
    return global_args, stages


def stage_of(target: str) -> tuple[dict[str, str], Stage]:
    dockerfile, _ = TARGETS[target]
    global_args, stages = parse_dockerfile(DOCKER / dockerfile)
    return global_args, stages[target]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "worker-gpu.Dockerfile"])
def test_base_images_are_pinned(dockerfile: str) -> None:
    global_args, stages = parse_dockerfile(DOCKER / dockerfile)
    images = {k: v for k, v in global_args.items() if k.endswith("_IMAGE")}
    assert images
    for name, image in images.items():
        assert IMAGE_ARG.match(image), f"{dockerfile}: {name}={image} is not an exact tag"
    for stage in stages.values():
        assert stage.base.startswith("${") or stage.base in stages, stage.base


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_images_run_a_real_command_as_a_non_root_user(target: str) -> None:
    _, stage = stage_of(target)
    user = stage.last("USER")
    assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"{target}: USER {user}"
    assert json.loads(stage.last("ENTRYPOINT") or "[]") == ["clipsearch"]
    check_cli(json.loads(stage.last("CMD") or "[]"))
    health = stage.last("HEALTHCHECK") or ""
    probe = json.loads(health.split(" CMD ", 1)[1])
    assert probe[0] == "clipsearch-probe"
    check_probe(probe[1:])
    copies = [arg for op, arg in stage.instructions if op == "COPY"]
    assert any(c.endswith("deploy/docker/probe.py /usr/local/bin/clipsearch-probe") for c in copies)
    exposed = {int(p) for op, arg in stage.instructions if op == "EXPOSE" for p in arg.split()}
    assert exposed == TARGETS[target][1]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_image_environments_are_real_settings(target: str) -> None:
    _, stage = stage_of(target)
    env = {k: v for k, v in stage.env.items() if k.startswith("CLIPSEARCH_")}
    for name in env:
        assert settings_field(name), f"{target}: {name}"
    settings = settings_from_env(env)
    assert settings.data_dir == Path("/var/lib/clipsearch")
    assert settings.bundle == "/opt/clipsearch/bundle"
    if target.startswith("worker"):  # a container's worker serves the gateway's network
        assert settings.worker.host == "0.0.0.0", target


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_images_bake_the_bundle_the_settings_name(target: str) -> None:
    _, stage = stage_of(target)
    bundle = stage.args["BUNDLE"]
    assert (ROOT / bundle / "manifest.json").is_file()
    copies = [arg for op, arg in stage.instructions if op == "COPY"]
    assert "${BUNDLE} /opt/clipsearch/bundle" in copies


def test_the_gpu_image_matches_the_cuda_major_of_onnxruntime_gpu() -> None:
    global_args, stages = parse_dockerfile(DOCKER / "worker-gpu.Dockerfile")
    build = stages["build"]
    ort = Version(build.args["ORT_GPU_VERSION"])
    # onnxruntime-gpu 1.27 and newer link CUDA 13, older ones CUDA 12 (pyproject's gpu extra).
    cuda_major = 13 if ort >= Version("1.27") else 12
    tag = global_args["CUDA_IMAGE"].split(":", 1)[1]
    assert tag.split(".")[0] == str(cuda_major)
    assert "-cudnn-runtime-" in tag  # the CUDA execution provider needs cuDNN
    trt = Requirement(build.args["TENSORRT_LIBS"])
    assert trt.name == f"tensorrt-cu{cuda_major}-libs"
    # onnxruntime-gpu links libnvinfer.so.10: TensorRT 10, whatever newer majors exist.
    assert all(Version(s.version).major == 10 for s in trt.specifier)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    gpu_extra = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["gpu"]]
    (spec,) = [r for r in gpu_extra if r.name == "onnxruntime-gpu"]
    assert ort in spec.specifier


def test_no_image_installs_torch() -> None:
    for dockerfile in ("Dockerfile", "worker-gpu.Dockerfile"):
        text = (DOCKER / dockerfile).read_text()
        runs = [line for line in text.splitlines() if "pip install" in line]
        assert runs and not any("torch" in line for line in runs)
        assert "find_spec('torch') is not None" in text  # the build fails if torch crept in


def test_the_build_context_keeps_what_the_images_copy() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = ("clipsearch", "service", "indexer", "models", "pyproject.toml", "README.md")
    for name in (*needed, "deploy/docker"):
        assert name not in ignored and not any(name.startswith(f"{i}/") for i in ignored)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "worker-gpu.Dockerfile"])
def test_images_install_the_packages_the_console_script_runs(dockerfile: str) -> None:
    """The entry point's package (the composition root) and the two it wires at start-up."""
    _, stages = parse_dockerfile(DOCKER / dockerfile)
    copied = {arg.split()[0] for op, arg in stages["build"].instructions if op == "COPY"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entry_package = project["scripts"]["clipsearch"].split(".")[0]
    assert {entry_package, "service", "indexer"} <= copied


def _compose_schema(tools: Tools) -> dict[str, object]:
    schema: dict[str, object] = json.loads(tools.compose_schema.read_text())
    # The schema shipped with docker-compose 1.29 predates the top-level `name` (Compose v2).
    properties = schema["properties"]
    assert isinstance(properties, dict)
    properties["name"] = {"type": "string"}
    return schema


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_files_follow_the_compose_spec(tools: Tools, path: Path) -> None:
    validator = jsonschema.Draft201909Validator(_compose_schema(tools))
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
    assert errors == []


def test_a_broken_compose_file_fails_the_spec(tools: Tools) -> None:
    data = yaml.safe_load(COMPOSE.read_text())
    data["services"]["gateway"]["healthcheck"] = {"test": ["CMD", "true"], "intervall": "5s"}
    validator = jsonschema.Draft201909Validator(_compose_schema(tools))
    assert any("intervall" in e.message for e in validator.iter_errors(data))


def test_compose_builds_the_targets_that_exist() -> None:
    for path in (COMPOSE, COMPOSE_GPU):
        for name, service in yaml.safe_load(path.read_text())["services"].items():
            build = service.get("build")
            if build:
                dockerfile = (path.parent / build["context"] / build["dockerfile"]).resolve()
                _, stages = parse_dockerfile(dockerfile)
                assert build["target"] in stages, f"{path.name} {name}"
                assert service["image"].split("/")[-1].split(":")[0] == build["target"]
