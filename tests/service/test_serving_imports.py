"""The serving side runs on onnxruntime, tokenizers, numpy and Pillow: no torch, no open_clip,
and no offline ``models`` code is imported by building and serving the app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from service.cli.main import app as cli_app  # the CLI module itself, with every command
from service.cli.bootstrap import build_components
from service.core.config import Settings
from service.gateway.app import create_app

settings = Settings(data_dir=Path(sys.argv[1]), bundle=sys.argv[2])
app = create_app(settings, build_components)
with TestClient(app) as client:
    assert app.state.runtime.wait(60), app.state.runtime.readiness()
    hits = client.post("/v1/search", json={"text": "a red circle"}).json()["hits"]
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps(roots))
"""


def test_serving_never_imports_training_code(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(tiny_bundle_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    roots = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert {"onnxruntime", "tokenizers", "PIL", "numpy"} <= roots
    assert not roots & {"torch", "torchvision", "open_clip", "models", "transformers"}
