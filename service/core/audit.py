"""The audit trail: one structured line per admin action, on the ``clipsearch.audit`` logger.

Each line is a JSON object: ``at`` (UTC, ISO 8601), ``who`` (the key's name or ``sha256:`` hash
prefix; ``anonymous`` without keys; never the key), ``client`` (the peer address), ``via``
(``http``, ``grpc`` or ``dashboard``), ``action`` (``reindex.start``, ``reindex.promote``,
``reindex.cancel``, ``rollback``, ``golden.set``, ``item.delete``, ``video.delete``,
``job.cancel``), ``target`` (the collection and the id acted on) and ``result`` (``ok`` or the
error type). The same object rides on the record as ``record.audit`` for a structured handler.
Route the logger wherever the audit trail must go; it never carries a secret.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("clipsearch.audit")


def audit(
    *,
    who: str,
    action: str,
    target: dict[str, Any],
    result: str,
    via: str,
    client: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Log one audit line; returns the record it logged."""
    record = {
        "at": (at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "who": who,
        "client": client,
        "via": via,
        "action": action,
        "target": {k: v for k, v in target.items() if v is not None},
        "result": result,
    }
    log.info("%s", json.dumps(record, sort_keys=True, default=str), extra={"audit": record})
    return record
