"""``celery -A clipsearch.celery_app``: the indexer's app for Celery's own command line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clipsearch import celery_app
from service.core.tasks import INDEX_BATCH, PLAN_JOB
from tests.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def test_the_command_line_app_is_built_from_the_environment_when_asked(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("CLIPSEARCH_BROKER__URL", redis_url)
    monkeypatch.setenv("CLIPSEARCH_BROKER__VISIBILITY_TIMEOUT_S", "7")
    celery_app._entry_point_app.cache_clear()
    try:
        app = celery_app.app
        assert app is celery_app.app
        assert app.conf.broker_transport_options["visibility_timeout"] == 7
        assert {INDEX_BATCH, PLAN_JOB} <= set(app.tasks)  # with the tasks, unlike the probe's
    finally:
        celery_app._entry_point_app.cache_clear()
    with pytest.raises(AttributeError):
        _ = celery_app.nothing_here  # type: ignore[attr-defined]
