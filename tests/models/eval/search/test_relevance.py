"""The relevance curves' fit (``models.eval.search.relevance``): the logistic fit recovers a known
curve, and the held-out cosines are read through the public API, every page of the collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsearch.cli.models_cmd import _search_gateway
from models.eval.photos.api import Api
from models.eval.search.relevance import PAGE, cosines, fit_logistic


def test_the_logistic_fit_recovers_the_curve_it_was_drawn_from() -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(1.0, 2.0, 40_000)
    relevant = rng.random(z.size) < 1.0 / (1.0 + np.exp(-(1.5 * z - 6.0)))
    curve = fit_logistic(z, relevant)
    assert curve.slope == pytest.approx(1.5, abs=0.1)
    assert curve.intercept == pytest.approx(-6.0, abs=0.4)
    assert (curve.pairs, curve.relevant) == (z.size, int(relevant.sum()))
    # the share of relevant pairs in a band of scores is what the curve says there
    band = (z > 3.5) & (z < 4.5)
    assert relevant[band].mean() == pytest.approx(curve.probability(np.array([4.0]))[0], abs=0.05)


@pytest.mark.parametrize(
    ("z", "relevant"),
    [([0.1, 0.2, 0.3], [False, False, False]), ([0.1, 0.2], [True, True]), ([0.1], [True, False])],
    ids=["none-relevant", "all-relevant", "mismatched"],
)
def test_the_fit_refuses_pairs_it_cannot_fit(z: list[float], relevant: list[bool]) -> None:
    with pytest.raises(ValueError, match="both relevant and unrelated"):
        fit_logistic(z, relevant)


def test_cosines_reads_every_item_of_a_collection_larger_than_a_page(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    # distinct texts: the store's order among equal scores may differ from page to page
    words = (
        "red",
        "blue",
        "green",
        "old",
        "new",
        "small",
        "tall",
        "wooden",
        "stone",
        "garden",
        "shed",
    )
    texts = [f"the {a} {b} {c}" for a in words for b in words for c in words if a < b < c][
        : PAGE + 20
    ]
    assert len(texts) == PAGE + 20
    with _search_gateway(tiny_bundle_dir, tmp_path / "gateway", tmp_path) as client:
        api = Api(client)
        api.wait_ready()
        names = {api.add(f"doc-{n}", description=t): f"doc-{n}" for n, t in enumerate(texts)}
        found = cosines(client, names, "a green shed", "description", len(texts))
        first = client.post(
            "/v1/search", json={"text": "a green shed", "mode": "description", "limit": 5}
        ).json()["hits"]
    assert set(found) == set(names.values())  # both pages
    for hit in first:
        assert found[names[hit["id"]]] == pytest.approx(hit["score"])
    assert all(-1.0 <= s <= 1.0 for s in found.values())
