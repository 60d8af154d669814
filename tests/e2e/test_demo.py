"""`make run` as a newcomer runs it (`clipsearch models demo-data`, then `clipsearch demo`): the
demo scenes and the sample photos of scikit-image and scikit-learn, indexed and served with the
shipped default bundle (photo); the printed curl commands work; "a cat" in the default mode finds
the cat photo first, with the description written for it; "a red circle" finds red circles
through the vision-free description path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import _free_port, _wait_ready
from tests.support import wait_for_job

pytestmark = pytest.mark.slow
RED_CIRCLE = re.compile(r"\bred circle\b")
SCENES, PHOTOS = 40, 22  # the photos: 20 of scikit-image, 2 of scikit-learn


def test_demo_serves_scenes_and_photos_and_its_curl_commands_work(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    for name in [n for n in env if n.startswith("CLIPSEARCH_")]:
        del env[name]
    data = str(tmp_path / "data")
    # As `make run`: the demo data is made offline first, then the demo serves it.
    made = subprocess.run(
        [sys.executable, "-m", "clipsearch", "models", "demo-data", "--data-dir", data,
         "--scenes", str(SCENES)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert made.returncode == 0 and f"demo photos: wrote {PHOTOS}" in made.stdout, made.stderr
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "demo", "--port", str(port), "--data-dir", data],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        output = Path(log.name).read_text()
        assert "bundle photo@" in output  # it says which bundle it serves
        job_id = re.search(r"demo scenes: job ([0-9a-f]+)", output)
        assert job_id, output
        job = wait_for_job(lambda j: httpx.get(f"{url}/v1/jobs/{j}").json(), job_id.group(1))
        assert (job["state"], job["done"], job["failed"]) == ("completed", SCENES + PHOTOS, 0)

        commands = [line.strip() for line in output.splitlines() if line.strip().startswith("curl")]
        assert len(commands) == 2, output
        results = []
        for command in commands:
            result = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
            )
            results.append(json.loads(result.stdout)["hits"])
            assert len(results[-1]) == 3, result.stdout
        # The README's first example: "a cat", default mode: the cat photo, uncaptioned, first,
        # with the description written from what the image tower saw.
        cat = results[0][0]
        assert cat["uri"].endswith("/photos/chelsea.png"), results[0]
        assert cat["description_generated"] and "cat" in cat["description"]
        assert cat["labels"] and "cat" in cat["labels"][0]["name"]
        # The second: the cat photo itself as the query finds itself first (visual features).
        assert results[1][0]["uri"].endswith("/photos/chelsea.png"), results[1]

        body = {"text": "a red circle", "mode": "description", "limit": SCENES}
        hits = httpx.post(f"{url}/v1/search", json=body).json()["hits"]
        has = [bool(RED_CIRCLE.search((h["description"] or "").lower())) for h in hits]
        n = sum(has)
        assert n >= 2, "the demo set should hold a few red circles"
        # Scenes with a red circle rank above the others, allowing one near miss (a red
        # square and a blue circle) among the first n.
        assert has[0] and sum(has[:n]) >= n - 1, has
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
