"""``clipsearch bench ingest`` runs end to end on a small input: a folder, local webdataset
shards and the same shards in moto's S3 server each become every point, and the ratios are
computed against the encoder's own rate measured in the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.ingest import run_ingest_bench
from service.core.config import Settings

pytestmark = pytest.mark.slow


def test_the_ingest_bench_stores_every_image_from_a_folder_and_from_shards(
    tiny_bundle_dir: Path,
) -> None:
    report = run_ingest_bench(Settings(), tiny_bundle_dir, images=48)
    assert report["points_ok"], report["ingest"]
    for name in ("ingest_shards_local", "ingest_shards_s3"):
        run = report[name]
        assert run["state"] == "completed" and run["points"] == 48, run
        assert run["ratio_to_decode_and_infer"] > 0 and run["points_ok"]
    assert report["ratio_to_decode_and_infer"] > 0
