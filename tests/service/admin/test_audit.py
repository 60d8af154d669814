"""The dashboard's admin actions leave the same audit lines as the API's, naming the key by its
hash prefix (never the key)."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.core.keys import digest
from tests.service.admin.conftest import ADMIN_KEY, login


def test_dashboard_actions_are_audited(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    token = login(keyed)
    caplog.set_level(logging.INFO, logger="clipsearch.audit")
    bad = keyed.post("/admin/golden", data={"golden": "{not json", "csrf_token": token})
    assert bad.status_code == 400
    keyed.post("/admin/rollback", data={"csrf_token": token})
    cancel = keyed.post("/admin/rollouts/no-such-rollout/cancel", data={"csrf_token": token})
    assert cancel.status_code == 404
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "clipsearch.audit"]
    who = "sha256:" + digest(ADMIN_KEY)[:12]
    assert [(x["who"], x["action"], x["via"]) for x in lines] == [
        (who, "set_golden", "dashboard"),
        (who, "rollback", "dashboard"),
        (who, "cancel_reindex", "dashboard"),
    ]
    # Refused actions are recorded too: bad input, nothing to roll back to, no such rollout.
    assert [x["result"] for x in lines] == ["invalid_input", "conflict", "not_found"]
    assert lines[0]["target"] == {"collection": "media"}
    assert lines[2]["target"] == {"id": "no-such-rollout"}
    assert ADMIN_KEY not in caplog.text
