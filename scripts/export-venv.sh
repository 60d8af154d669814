#!/usr/bin/env bash
# Create .venv-export: the model-export environment (torch + open_clip + the ONNX toolchain).
#
# It is separate from .venv because torch/torchvision/open_clip are large (~6 GB with the CUDA
# build of torch) and only `clipsearch models export` and tests/models/export need them. The
# project itself is installed editable with --no-deps, plus the few serving dependencies that
# service.core / service.encoder import, so exported bundles can be loaded and served here too.
#
# Idempotent: a stamp records what was installed; a rerun with the same inputs does nothing.
# Usage: scripts/export-venv.sh [VENV_DIR]   (default .venv-export; PYTHON=python3.11)
set -Eeuo pipefail
SCRIPT=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SCRIPT")/.."

VENV=${1:-.venv-export}
PYTHON=${PYTHON:-python3.11}
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
# The project's own imports for service.core/service.encoder (bundles load and serve here) and
# for the `clipsearch` CLI (typer, rich, httpx), so `.venv-export/bin/clipsearch models export`
# works; nothing of the gateway, the store or the indexer.
PACKAGES=(
  open-clip-torch onnx onnxruntime onnxscript tokenizers ftfy
  pytest pytest-timeout numpy pillow pydantic pydantic-settings typer rich httpx
)
STAMP="$VENV/.export-installed"
# What the stamp vouches for: the pins, the package list, this script and pyproject.toml.
WANT=$(
  { printf '%s\n' "${TORCH_PINS[@]}" "${PACKAGES[@]}"; cat "$SCRIPT" pyproject.toml; } | sha256sum |
    cut -d' ' -f1
)

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

py=$(command -v "$PYTHON" || command -v python3)
"$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "export venv needs Python 3.11; found $("$py" --version 2>&1)" >&2
  exit 1
}

# torch's CUDA build with its nvidia-* wheels is most of it: say so before pip runs out of disk
# half way through a 5 GB install.
need_mb=7000
free_mb=$(df -Pm . | awk 'NR == 2 {print $4}')
if [ ! -x "$VENV/bin/python" ] && [ "${free_mb:-0}" -lt "$need_mb" ]; then
  echo "export venv needs about ${need_mb} MB free on $(df -P . | awk 'NR == 2 {print $6}');" \
    "${free_mb} MB are: free some space (old clones, /tmp) and run make test-export again" >&2
  exit 1
fi

start=$(date +%s)
echo "creating $VENV (${TORCH_PINS[*]}, open_clip, onnx toolchain): a few minutes"
[ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
log="$VENV/install.log"
pip() { "$VENV/bin/python" -m pip install --no-cache-dir --progress-bar off "$@" >>"$log" 2>&1; }
: >"$log"
# -E above makes this trap fire for a failure inside pip() too; df says whether the disk filled.
trap 'echo "export venv setup failed; the end of $log:" >&2; tail -n 30 "$log" >&2; df -h . >&2' ERR
pip --upgrade pip
pip "${TORCH_PINS[@]}"
# The torch pins again, so that resolving the rest can never move them.
pip "${TORCH_PINS[@]}" "${PACKAGES[@]}"
pip --no-deps -e .
"$VENV/bin/python" -c 'import open_clip, onnxruntime, onnxscript, tokenizers, torch, torchvision'
trap - ERR
echo "$WANT" >"$STAMP"
echo "$VENV ready in $(($(date +%s) - start)) s ($(du -sh "$VENV" | cut -f1))"
