"""The serving side runs on onnxruntime, tokenizers, numpy and Pillow: no torch, no open_clip,
and no offline ``models`` code is imported by building and serving the app — also on a checkout
without ``models/zoo``, where it serves the tiny test bundle that ``make run`` built offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
import clipsearch.bundles
from clipsearch.cli.main import app as cli_app  # the CLI module itself, with every command
from clipsearch.bootstrap import build_components
from service.core.config import Settings
from service.gateway.app import create_app

data_dir, bundle, zoo = sys.argv[1:4]
if zoo:
    clipsearch.bundles.ZOO_DIR = Path(zoo)
settings = Settings(data_dir=Path(data_dir), bundle=bundle or None)
app = create_app(settings, build_components)
with TestClient(app) as client:
    assert app.state.runtime.wait(60), app.state.runtime.readiness()
    model = client.get("/health/ready").json()["model"]
    hits = client.post("/v1/search", json={"text": "a red circle"}).json()["hits"]
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"roots": roots, "model": model}))
"""


@pytest.mark.parametrize("checkout", ["bundle configured", "no zoo"])
def test_serving_never_imports_training_code(
    checkout: str, tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    data = tmp_path / "data"
    if checkout == "no zoo":
        # What `make run` leaves on a checkout without models/zoo: the tiny bundle, built offline.
        shutil.copytree(tiny_bundle_dir, data / "bundles" / "tiny-test")
        args = [str(data), "", str(tmp_path / "empty-zoo")]
    else:
        args = [str(data), str(tiny_bundle_dir), ""]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    roots = set(out["roots"])
    assert out["model"] == "tiny-test@0.1.0"
    assert {"onnxruntime", "tokenizers", "PIL", "numpy"} <= roots
    assert not roots & {"torch", "torchvision", "open_clip", "models", "transformers", "loadtests"}
