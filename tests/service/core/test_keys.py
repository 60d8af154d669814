"""API keys: the scope grammar, the keys file, hashing, and errors that never quote a key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from clipsearch.cli.main import app
from service.core.config import AuthSettings, Settings
from service.core.keys import digest, find_key, parse_keys, read_entries

SECRET = "s3cret-Zq9"


def test_scopes_per_collection_and_for_every_collection() -> None:
    [tenant, ops] = parse_keys(f"{SECRET}:search@alpha+ingest@alpha+admin:alpha-bot,ops-key:search")
    assert tenant.id == "alpha-bot"
    assert tenant.allows("search", "alpha") and tenant.allows("ingest", "alpha")
    assert not tenant.allows("search", "beta") and not tenant.allows("ingest", "beta")
    assert tenant.allows("admin", "beta")  # a scope without @ is for every collection
    assert tenant.sees("beta") and tenant.everywhere("admin") and not tenant.everywhere("search")
    # Without a name, the key is known by a short prefix of its hash.
    assert ops.id == "sha256:" + digest("ops-key")[:12]
    assert ops.allows("search", "anything") and not ops.allows("ingest", "anything")
    [only_alpha] = parse_keys("k:search@alpha")
    assert not only_alpha.sees("beta") and only_alpha.has_scope("search")
    assert not only_alpha.has_scope("admin")


def test_settings_keep_only_hashes() -> None:
    settings = Settings(auth=AuthSettings.model_validate({"api_keys": f"{SECRET}:search"}))
    dumped = settings.model_dump_json()
    assert SECRET not in dumped and SECRET not in repr(settings)
    assert digest(SECRET) in dumped
    # The CLI rebuilds settings from their dump: the keys come through unchanged.
    assert Settings.model_validate(settings.model_dump()).auth.api_keys == settings.auth.api_keys


def test_lookup_compares_hashes() -> None:
    keys = parse_keys(f"{SECRET}:search,other:ingest")
    found = find_key(keys, SECRET)
    assert found is not None and found.grants == {"search"}
    assert find_key(keys, SECRET + "x") is None
    assert find_key(keys, "") is None and find_key(keys, None) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (SECRET, "entry 1 must look like key:scope1+scope2"),
        (f"ok:search,{SECRET}:", "entry 2: its 1st scope is not one of"),
        (f"{SECRET}:search+serch", "entry 1: its 2nd scope is not one of"),
        (f"{SECRET}:search@Alpha!", "entry 1: its 1st scope names no valid collection"),
        (f"{SECRET}:search:bad name", "entry 1: its name must be"),
        (f":{SECRET}", "entry 1 must look like"),
        (f"{SECRET}:search,{SECRET}:admin", "configured twice with different scopes"),
        (f"{SECRET}:search:bot,other:search:bot", "two API keys are both named 'bot'"),
    ],
)
def test_bad_entries_name_the_setting_never_the_key(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    text = str(caught.value)
    assert says in text
    assert "CLIPSEARCH_AUTH__API_KEYS" in text or "API key" in text
    assert SECRET not in text


def test_keys_from_a_file_with_comments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "api-keys"
    path.write_text(
        "# tenant alpha\n"
        f"{SECRET}:search@alpha+ingest@alpha:alpha-bot\n"
        "\n"
        "   # ops\n"
        "ops-key:admin+search\n"
    )
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", "env-key:search")
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS_FILE", str(path))
    keys = Settings().auth.api_keys
    assert {k.id for k in keys} == {"alpha-bot", "sha256:" + digest("ops-key")[:12]} | {
        "sha256:" + digest("env-key")[:12]
    }
    assert find_key(keys, SECRET) is not None and find_key(keys, "ops-key") is not None
    # The container probe reads the same file for a key to present.
    assert [key for key, _ in read_entries(path.read_text(), lines=True)] == [SECRET, "ops-key"]


def test_a_bad_keys_file_names_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "api-keys"
    path.write_text(f"# ok\ngood:search\n{SECRET}:serch\n")
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS_FILE", str(path))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert f"CLIPSEARCH_AUTH__API_KEYS_FILE {path} line 3" in str(caught.value)
    assert SECRET not in str(caught.value)
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="cannot read it"):
        Settings()


def test_serve_refuses_bad_keys_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", f"{SECRET}:search@alpha+root")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "invalid setting auth.api_keys" in result.output
    assert "CLIPSEARCH_AUTH__API_KEYS entry 1: its 2nd scope" in result.output
    assert SECRET not in result.output and "Traceback" not in result.output


def test_rate_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().auth.search_rate.per_s == 0  # off unless set
    monkeypatch.setenv("CLIPSEARCH_AUTH__SEARCH_RATE__PER_S", "2.5")
    monkeypatch.setenv("CLIPSEARCH_AUTH__WRITE_RATE__PER_S", "0.5")
    monkeypatch.setenv("CLIPSEARCH_AUTH__WRITE_RATE__BURST", "4")
    auth = Settings().auth
    assert (auth.rate("search").per_s, auth.rate("search").capacity) == (2.5, 2.5)
    assert (auth.rate("ingest").per_s, auth.rate("admin").capacity) == (0.5, 4.0)
    monkeypatch.setenv("CLIPSEARCH_AUTH__WRITE_RATE__PER_S", "-1")
    with pytest.raises(ValidationError, match=r"write_rate\.per_s"):
        Settings()
