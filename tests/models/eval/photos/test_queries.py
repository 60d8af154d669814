"""The committed query file, documents and catalog: valid, complete and consistent."""

from __future__ import annotations

from collections import Counter

from models.eval.photos.catalog import PACKAGES, photos
from models.eval.photos.runner import KINDS, load_documents, load_queries


def test_at_least_60_queries_and_every_kind() -> None:
    queries = load_queries()
    assert len(queries) >= 60
    kinds = Counter(q.kind for q in queries)
    assert set(kinds) == set(KINDS)
    assert min(kinds.values()) >= 10


def test_every_relevant_id_is_a_catalogued_photo() -> None:
    ids = {p.id for p in photos()}
    for q in load_queries():
        assert q.relevant, q.text
        assert len(set(q.relevant)) == len(q.relevant), q.text
        assert set(q.relevant) <= ids, (q.text, set(q.relevant) - ids)


def test_queries_are_unique_and_every_photo_is_asked_for() -> None:
    queries = load_queries()
    texts = [q.text.lower() for q in queries]
    assert len(texts) == len(set(texts))
    wanted = {r for q in queries for r in q.relevant}
    assert wanted == {p.id for p in photos()}


def test_the_hard_cases_stay_in() -> None:
    # Outside ImageNet's vocabulary on purpose: textures, the moon, a silhouette.
    texts = {q.text for q in load_queries()}
    assert {"a brick wall", "gravel", "the moon", "a horse"} <= texts


def test_catalog_is_pinned_and_large_enough() -> None:
    catalog = photos()
    assert len({p.id for p in catalog}) == len(catalog)
    assert sum(p.photograph for p in catalog) >= 40
    for p in catalog:
        assert p.package in PACKAGES
        assert len(p.sha256) == 64 and int(p.sha256, 16) >= 0
        assert p.member.startswith(PACKAGES[p.package].root)
        assert p.license_note
        if p.twin is not None:
            assert next(t for t in catalog if t.id == p.twin).twin == p.id
    demo = [p for p in catalog if p.package in ("scikit-image", "scikit-learn")]
    assert len(demo) >= 20


def test_documents_are_text_only_and_unique() -> None:
    docs = load_documents()
    assert len(docs) >= 24
    assert len({d.id for d in docs}) == len(docs)
    assert any("cat" in d.text.lower() for d in docs)
    assert any("coffee" in d.text.lower() for d in docs)
    for d in docs:
        assert 20 < len(d.text) < 2000
