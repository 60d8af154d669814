"""Settings from the environment: prefix, nesting, comma lists, API keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.config import Settings
from service.core.keys import digest


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CLIPSEARCH_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.embedded_store and settings.in_process_encoder and settings.in_process_jobs
    assert settings.data_dir == Path(".clipsearch")
    assert settings.auth.api_keys == ()


def test_environment_with_nesting_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_ENCODER__BULK__MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("CLIPSEARCH_ENCODER__INTERACTIVE__MAX_QUEUE", "9")
    monkeypatch.setenv("CLIPSEARCH_ENCODER__ENDPOINTS", "w1:50051, w2:50051")
    monkeypatch.setenv("CLIPSEARCH_QDRANT__URL", "http://qdrant:6333")
    monkeypatch.setenv("CLIPSEARCH_SOURCES__ALLOWED_ROOTS", "/data/a,/data/b")
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", "k1:search+ingest,k2:admin")
    settings = Settings()
    assert settings.encoder.bulk.max_batch_size == 7
    assert settings.encoder.lane("interactive").max_queue == 9
    assert settings.encoder.bulk.max_queue == 2048  # the rest of the lane keeps its defaults
    assert settings.encoder.endpoints == ["w1:50051", "w2:50051"]
    assert not settings.embedded_store and not settings.in_process_encoder
    assert settings.sources.allowed_roots == [Path("/data/a"), Path("/data/b")]
    grants = {key.id: key.grants for key in settings.auth.api_keys}
    assert grants == {
        "sha256:" + digest("k1")[:12]: {"search", "ingest"},
        "sha256:" + digest("k2")[:12]: {"admin"},
    }


@pytest.mark.parametrize("value", ["nocolon", "k:", "k:root", ":search"])
def test_bad_api_keys_are_rejected_at_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_bad_values_fail_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_ENCODER__INTERACTIVE__MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValidationError):
        Settings(collection="Bad Name!")


def test_a_gc_freeze_that_is_not_a_boolean_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from clipsearch.cli.main import app

    monkeypatch.setenv("CLIPSEARCH_STARTUP__GC_FREEZE", "maybe")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "invalid setting startup.gc_freeze" in result.output
    assert "Traceback" not in result.output
