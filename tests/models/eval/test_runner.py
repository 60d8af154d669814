"""The runner end to end on the tiny bundle: real ONNX Runtime sessions, real scenes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.eval.report import METRICS, TARGETS
from models.eval.runner import BundleEncoder, evaluate, write_report

N = 50


@pytest.fixture(scope="module")
def result(tiny_bundle_dir: Path) -> dict[str, Any]:
    return evaluate(tiny_bundle_dir, n_gallery=N)


def test_encoder_outputs_are_unit_length_and_independent_of_batching(
    tiny_bundle_dir: Path,
) -> None:
    enc = BundleEncoder(tiny_bundle_dir)
    texts = [f"a red circle and {'a blue square ' * (i % 7)}" for i in range(40)]
    joint, sentence = enc.embed_texts(texts)
    assert joint.shape == (40, 64) and sentence.shape == (40, 128)
    np.testing.assert_allclose(np.linalg.norm(joint, axis=1), 1.0, atol=1e-5)
    # Length-sorted batches of 32 must come back in the caller's order, unchanged by padding.
    one_joint, one_sentence = enc.embed_texts([texts[37]])
    np.testing.assert_allclose(joint[37], one_joint[0], atol=1e-5)
    np.testing.assert_allclose(sentence[37], one_sentence[0], atol=1e-5)

    from PIL import Image

    images = [Image.new("RGB", (40, 30), (10 * i, 100, 200 - 5 * i)) for i in range(33)]
    vectors = enc.embed_images(images)
    assert vectors.shape == (33, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.embed_images(images[32:])[0], vectors[32], atol=1e-5)
    assert enc.images_embedded == 34 and enc.texts_embedded == 41


def test_every_metric_is_reported_in_the_unit_interval(result: dict[str, Any]) -> None:
    assert result["bundle"] == "tiny-test@0.1.0"
    assert result["split"] == "test" and result["n"] == N
    assert result["n_seen"] + result["n_held_out"] == N
    keys = {key for key, _ in METRICS}
    for group in ("all", "seen", "held_out"):
        assert set(result["metrics"][group]) == keys
    for key, value in result["metrics"]["all"].items():
        assert value is not None, key
        assert 0.0 <= value <= 1.0, (key, value)
    for group in ("seen", "held_out"):
        for key, value in result["metrics"][group].items():
            assert value is None or 0.0 <= value <= 1.0, (group, key, value)
    for key, gap in result["gap"].items():
        assert gap is None or -1.0 <= gap <= 1.0, (key, gap)
    # Recall grows with k.
    for kind in ("short", "compositional", "counting", "long"):
        m = result["metrics"]["all"]
        assert m[f"t2i_{kind}_r1"] <= m[f"t2i_{kind}_r5"] <= m[f"t2i_{kind}_r10"]


def test_sane_values_for_the_tiny_lexical_bundle(result: dict[str, Any]) -> None:
    m = result["metrics"]["all"]
    # The text tower is lexical: a rewrite of the long caption finds its description far above
    # chance (1/N).
    assert m["description_r1"] > 5 / N
    assert result["wall_time_s"] > 0
    assert result["images_per_s"] > 0 and result["texts_per_s"] > 0
    assert result["images_embedded"] == N
    assert [t["id"] for t in result["targets"]] == [t.id for t in TARGETS]


def test_the_same_scenes_give_the_same_numbers(
    tiny_bundle_dir: Path, result: dict[str, Any]
) -> None:
    again = evaluate(tiny_bundle_dir, n_gallery=N)
    assert again["metrics"] == result["metrics"]


def test_report_of_a_real_run_is_valid_json(result: dict[str, Any], tmp_path: Path) -> None:
    json_path, md_path = write_report(result, tmp_path, baselines={"same": result})
    assert json.loads(json_path.read_text(encoding="utf-8"))["n"] == N
    assert "baseline: same" in md_path.read_text(encoding="utf-8")


def test_evaluate_refuses_an_empty_gallery(tiny_bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="n_gallery"):
        evaluate(tiny_bundle_dir, n_gallery=0)


def test_held_out_queries_are_ranked_against_the_full_gallery() -> None:
    from types import SimpleNamespace

    from models.eval.runner import _group_metrics

    # Query 2's best match is gallery item 0: restricted to row 2 it must still miss at R@1,
    # which it would not if the gallery were cut down to the restricted rows.
    sim = np.array([[0.9, 0.1, 0.2], [0.1, 0.9, 0.2], [0.95, 0.1, 0.5]])
    scores = SimpleNamespace(
        t2i=dict.fromkeys(("short", "compositional", "counting", "long"), sim),
        i2t=sim,
        description=sim,
        margins={"count_accuracy": [np.array([-0.1]), np.array([0.0]), np.array([0.2, -0.3])]},
    )
    held = _group_metrics(scores, np.array([2]))  # type: ignore[arg-type]
    assert held["t2i_long_r1"] == 0.0 and held["t2i_long_r5"] == 1.0
    assert held["description_r1"] == 0.0
    assert held["count_accuracy"] == 0.0
    seen = _group_metrics(scores, np.array([0, 1]))  # type: ignore[arg-type]
    assert seen["t2i_long_r1"] == 1.0
    assert seen["count_accuracy"] == 0.5  # a tie (margin 0) fails


def test_count_matched_gap_compares_scenes_of_the_same_size() -> None:
    from types import SimpleNamespace

    from models.eval.runner import _count_matched_gap

    # Rows 0, 2 and 3 find their target at R@1; row 1 does not.
    sim = np.eye(4)
    sim[1] = [0.0, 0.5, 0.9, 0.0]
    scores = SimpleNamespace(
        t2i=dict.fromkeys(("short", "compositional", "counting", "long"), sim),
        i2t=sim,
        description=sim,
        margins={"count_accuracy": [np.array([-1.0])] * 4},
    )
    held = np.array([False, True, False, True])
    # One object: seen 1.0 vs held-out 0.0; two objects: 1.0 vs 1.0; equal held-out weights.
    gap = _count_matched_gap(scores, held, np.array([1, 1, 2, 2]))  # type: ignore[arg-type]
    assert gap["t2i_long_r1"] == pytest.approx(0.5)
    assert gap["count_accuracy"] == 0.0
    # A size with no seen scene to compare against is left out of the weighting.
    gap = _count_matched_gap(scores, held, np.array([1, 1, 2, 3]))  # type: ignore[arg-type]
    assert gap["t2i_long_r1"] == pytest.approx(1.0)


def test_count_matched_gap_is_reported(result: dict[str, Any]) -> None:
    assert set(result["gap_count_matched"]) == {key for key, _ in METRICS}
    for key, gap in result["gap_count_matched"].items():
        assert gap is None or -1.0 <= gap <= 1.0, (key, gap)
    assert set(result["mean_objects"]) == {"seen", "held_out"}
