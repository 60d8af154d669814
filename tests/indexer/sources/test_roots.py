"""An allowed-roots error names the setting of the process that raised it: the gateway's
`--allow-root`, or the indexer's own CLIPSEARCH_SOURCES__ALLOWED_ROOTS."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.distributed.batches import source_entry
from indexer.sources.read import iter_source
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.core.schemas.sources import SourceSpec


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Settings, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "a.png").write_bytes(b"x")
    (outside / "list.jsonl").write_text('{"uri": "a.png"}\n')
    return Settings(sources={"allowed_roots": [allowed]}), outside  # type: ignore[arg-type]


def _refusal(call: object) -> str:
    assert callable(call)
    with pytest.raises(ClipsearchError) as caught:
        call()
    assert caught.value.type is ErrorType.forbidden
    return caught.value.message


def test_the_gateway_is_told_to_pass_allow_root(folders: tuple[Settings, Path]) -> None:
    settings, outside = folders
    message = _refusal(lambda: iter_source(SourceSpec(directory=str(outside)), settings))
    assert f"restart the gateway with `--allow-root {outside}`" in message


@pytest.mark.parametrize("kind", ["directory", "manifest"])
def test_an_indexer_is_told_to_set_its_own_allowed_roots(
    folders: tuple[Settings, Path], kind: str
) -> None:
    settings, outside = folders
    source = str(outside if kind == "directory" else outside / "list.jsonl")
    spec = SourceSpec.model_validate({kind: source})
    message = _refusal(lambda: list(iter_source(spec, settings, reader="indexer")))
    assert "is outside the allowed roots" in message
    assert (
        f"add {outside} to CLIPSEARCH_SOURCES__ALLOWED_ROOTS (comma-separated) of this "
        "`clipsearch indexer` and restart it" in message
    )
    assert "restart the gateway" not in message


def test_an_indexer_task_entry_outside_its_roots_names_its_setting(
    folders: tuple[Settings, Path],
) -> None:
    settings, outside = folders
    message = _refusal(lambda: source_entry({"uri": str(outside / "a.png")}, settings))
    assert "outside the allowed roots of this indexer" in message
    assert (
        "CLIPSEARCH_SOURCES__ALLOWED_ROOTS" in message and "the gateway checks its own" in message
    )
    empty = Settings()
    message = _refusal(lambda: source_entry({"uri": str(outside / "a.png")}, empty))
    assert message.startswith("this indexer reads no local files; to allow it, add")
