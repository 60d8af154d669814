"""``clipsearch models fit-relevance``: re-fits fusion's relevance curves on a bundle's null, from
pairs it gathers through a real gateway (here a four-photo stand-in for the photo dev set, on the
tiny labelled bundle) or from pairs saved before; prints the curves and the Python for
``service.search.fusion.RELEVANCE`` and writes the report. Bad input is a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from clipsearch.cli.main import app
from service.search.fusion import RelevanceCurve

# The curves drawn from, on the cosine: P(relevant) = sigmoid(a * cosine + b).
ON_COSINE = {"picture": (20.0, -8.0), "generated": (15.0, -6.0), "text": (25.0, -12.0)}


def _synthetic_pairs(path: Path, n: int = 20_000, **extra: Any) -> Path:
    rng = np.random.default_rng(3)
    arrays: dict[str, Any] = dict(extra)
    for kind, (a, b) in ON_COSINE.items():
        x = np.clip(rng.normal(0.2, 0.12, n), -1.0, 1.0)
        arrays[f"{kind}_cosines"] = x
        arrays[f"{kind}_relevant"] = rng.random(n) < 1.0 / (1.0 + np.exp(-(a * x + b)))
    np.savez(path, **arrays)
    return path


def _fit(*args: str) -> Any:
    return CliRunner().invoke(app, ["models", "fit-relevance", *args])


def _flat(output: str) -> str:
    """The CLI's output without the error box's frame and line breaks."""
    return " ".join(output.replace("│", " ").split())


def _snippet(python: str) -> dict[str, RelevanceCurve]:
    namespace: dict[str, Any] = {"RelevanceCurve": RelevanceCurve, "Evidence": str}
    exec(python, namespace)  # the printed Python is what fusion.py would hold
    curves: dict[str, RelevanceCurve] = namespace["RELEVANCE"]
    return curves


def test_the_command_is_listed_with_its_options() -> None:
    result = CliRunner().invoke(app, ["models", "fit-relevance", "--help"])
    assert result.exit_code == 0, result.output
    assert "--dev-root" in result.output and "--pairs" in result.output
    assert "--out" in result.output


def test_saved_pairs_are_fitted_on_the_bundles_null(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    """Pairs drawn from known curves on the cosine come back as those curves on the bundle's
    standardised score z = (cosine - mean) / spread: slope a * spread, intercept a * mean + b."""
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.core.bundle.manifest import load_bundle
    from service.core.config import Settings
    from service.encoder.engine import EncoderEngine
    from service.search.calibration import measure_null

    pairs = _synthetic_pairs(tmp_path / "pairs.npz")
    result = _fit(str(tiny_bundle_dir), "--pairs", str(pairs), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "relevance-fit.json").read_text())
    assert not (tmp_path / "out" / "relevance-pairs.npz").exists()  # nothing was gathered

    embedder = InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), Settings()))
    try:
        null = measure_null(embedder).channels("text")
    finally:
        embedder.close()
    for kind, (a, b) in ON_COSINE.items():
        used = report["null"][kind]
        scale = null[used["channel"]]
        assert (used["mean"], used["spread"]) == pytest.approx((scale.mean, scale.spread))
        curve = report["curves"][kind]
        assert curve["pairs"] == 20_000 and 0 < curve["relevant"] < 20_000
        assert curve["slope"] == pytest.approx(a * scale.spread, rel=0.1)
        assert curve["intercept"] == pytest.approx(a * scale.mean + b, abs=0.5)
        half = RelevanceCurve(curve["slope"], curve["intercept"]).probability(curve["z_at_half"])
        assert half == pytest.approx(0.5, abs=0.01)
    assert report["bundle"].startswith("tiny-test@")
    assert {k: v["channel"] for k, v in report["null"].items()} == {
        "picture": "image",
        "generated": "description",
        "text": "caption",
    }
    # stdout: a line per curve, then the Python for fusion.RELEVANCE (the report's own)
    assert report["python"] in result.stdout
    printed = _snippet(report["python"])
    assert set(printed) == set(ON_COSINE)
    for kind, curve in printed.items():
        assert (curve.slope, curve.intercept) == (
            report["curves"][kind]["slope"],
            report["curves"][kind]["intercept"],
        )
        assert f"{kind:<10} slope {curve.slope:.4f}" in result.stdout


def test_the_held_out_pairs_are_gathered_through_a_gateway_and_saved(
    tmp_path: Path, tiny_labelled_bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole driver, on a four-photo stand-in for the photo dev set (its packages already
    unpacked: nothing is fetched) and the held-out demo scenes; the pairs it saves re-fit to the
    same curves."""
    from models.photo.dev import devset
    from tests.service.search.test_scores import blocks

    root = tmp_path / "dev"
    photos = []
    for n, tags in enumerate(["frog,green", "frog,animal", "car,red", "cup,red"]):
        photo = devset.DevPhoto("pkg", f"p{n}.png", frozenset(tags.split(",")), tags.split(",")[0])
        (root / "pkg").mkdir(parents=True, exist_ok=True)
        (root / "pkg" / photo.path).write_bytes(blocks(n))
        photos.append(photo)
    queries = [
        devset.DevQuery("object", "a frog", frozenset({"frog"})),
        devset.DevQuery("colour", "something red", frozenset({"red"})),
    ]
    monkeypatch.setattr(devset, "load_photos", lambda path=None: photos)
    monkeypatch.setattr(devset, "load_queries", lambda path=None: queries)

    out = tmp_path / "out"
    result = _fit(str(tiny_labelled_bundle_dir), "--dev-root", str(root), "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "relevance-fit.json").read_text())
    curves = report["curves"]
    assert (curves["picture"]["pairs"], curves["picture"]["relevant"]) == (8, 4)
    assert (curves["generated"]["pairs"], curves["generated"]["relevant"]) == (8, 4)
    # 60 held-out scenes, each against every scene's paraphrase, in caption and description
    assert curves["text"]["pairs"] == 2 * 60 * 60 and curves["text"]["relevant"] >= 120
    saved = np.load(out / "relevance-pairs.npz")
    assert str(saved["bundle"]) == report["bundle"]
    assert int(saved["picture_relevant"].sum()) == 4

    again = _fit(
        str(tiny_labelled_bundle_dir),
        "--pairs",
        str(out / "relevance-pairs.npz"),
        "--out",
        str(tmp_path / "again"),
    )
    assert again.exit_code == 0, again.output
    refit = json.loads((tmp_path / "again" / "relevance-fit.json").read_text())
    assert refit["curves"] == curves


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "exactly one of --dev-root and --pairs"),
        (["--dev-root", "x", "--pairs", "y"], "exactly one of --dev-root and --pairs"),
        (["--pairs", "{missing}"], "not a pairs file"),
        (["--pairs", "{garbage}"], "not a pairs file"),
        (["--pairs", "{partial}"], "no generated_cosines and generated_relevant"),
        (["--pairs", "{ragged}"], "one cosine and one relevant flag per pair"),
        (["--pairs", "{too_big}"], "a cosine outside [-1, 1]"),
    ],
)
def test_bad_options_and_pairs_files_are_refused_with_what_is_wrong(
    tmp_path: Path, tiny_bundle_dir: Path, args: list[str], needle: str
) -> None:
    files = {
        "missing": tmp_path / "none.npz",
        "garbage": tmp_path / "garbage.npz",
        "partial": tmp_path / "partial.npz",
        "ragged": tmp_path / "ragged.npz",
        "too_big": tmp_path / "big.npz",
    }
    files["garbage"].write_bytes(b"not numpy at all")
    np.savez(files["partial"], picture_cosines=np.zeros(3), picture_relevant=np.zeros(3, bool))
    ragged: dict[str, Any] = {f"{k}_cosines": np.zeros(3) for k in ON_COSINE}
    ragged |= {f"{k}_relevant": np.zeros(2, bool) for k in ON_COSINE}
    np.savez(files["ragged"], **ragged)
    big: dict[str, Any] = {f"{k}_cosines": np.full(3, 2.0) for k in ON_COSINE}
    big |= {f"{k}_relevant": np.array([True, False, False]) for k in ON_COSINE}
    np.savez(files["too_big"], **big)
    given = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    out = tmp_path / "out"
    result = _fit(str(tiny_bundle_dir), *given, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert needle in _flat(result.output), result.output
    assert not out.exists()


def test_pairs_it_cannot_fit_or_of_another_bundle_are_refused(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    none_relevant: dict[str, Any] = {f"{k}_cosines": np.linspace(-0.5, 0.5, 50) for k in ON_COSINE}
    none_relevant |= {f"{k}_relevant": np.zeros(50, bool) for k in ON_COSINE}
    np.savez(tmp_path / "flat.npz", **none_relevant)
    out = tmp_path / "out"
    flat = _fit(str(tiny_bundle_dir), "--pairs", str(tmp_path / "flat.npz"), "--out", str(out))
    assert flat.exit_code == 1, flat.output
    assert "cannot fit the curves: the picture pairs (0 of 50 relevant)" in flat.output
    assert "both relevant and unrelated" in flat.output
    assert not out.exists()
    other = _synthetic_pairs(tmp_path / "other.npz", n=500, bundle=np.asarray("photo@9.9.9"))
    refused = _fit(str(tiny_bundle_dir), "--pairs", str(other), "--out", str(out))
    assert refused.exit_code == 2, refused.output
    assert "gathered with bundle photo@9.9.9, not tiny-test@" in _flat(refused.output)
    assert not out.exists()
    no_bundle = _fit(str(tmp_path / "nowhere"), "--pairs", str(other), "--out", str(out))
    assert no_bundle.exit_code == 1 and "error:" in no_bundle.output, no_bundle.output


def test_a_dev_set_it_cannot_fetch_says_how_to_fetch_it(
    tmp_path: Path, tiny_bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from models.photo.dev import devset

    def offline(root: Path, photos: list[Any]) -> None:
        raise subprocess.CalledProcessError(100, ["apt-get", "download", "some-package"])

    monkeypatch.setattr(devset, "fetch", offline)
    out = tmp_path / "out"
    result = _fit(str(tiny_bundle_dir), "--dev-root", str(tmp_path / "dev"), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "cannot fetch the photo dev set" in result.output
    assert "python -m models.photo.dev fetch --root DIR" in result.output
    assert not out.exists()
