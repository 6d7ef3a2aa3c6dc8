"""The audit log's use cases: append one entry per state change or refused authentication; read a tenant's."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from shared.domain.audit import ACTION_PATTERN, AuditEntry
from shared.domain.errors import InvalidInput
from shared.services.platform import Platform
from shared.services.queries import decode_token, encode_token

logger = logging.getLogger(__name__)

_CURSOR = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\|(?:[0-9a-f]{32}(?:,[0-9a-f]{32})*)?$")


def record(platform: Platform, tenant_id: str, **fields: Any) -> AuditEntry:
    """Appends one entry (AuditEntry's fields: actor_kind, actor_id, action, target, outcome, request_id,
    status_code) to the tenant's log."""
    entry = AuditEntry.new(tenant_id, **fields)
    platform.audit.append(entry)
    return entry


def _since(value: str | None) -> str | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("since must be an ISO 8601 time such as 2026-01-31T12:00:00Z", code="InvalidTime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def list_audit(
    platform: Platform,
    tenant_id: str,
    *,
    since: str | None = None,
    action: str | None = None,
    limit: int = 100,
    continuation_token: str | None = None,
) -> dict[str, Any]:
    """`{"items", "continuationToken"}`, newest first."""
    if action is not None and not ACTION_PATTERN.fullmatch(action):
        raise InvalidInput("action is a name such as jobs.submit", code="InvalidAction")
    cursor = None
    if continuation_token:
        cursor = decode_token(continuation_token).get("a")
        if not isinstance(cursor, str) or not _CURSOR.fullmatch(cursor):
            raise InvalidInput(
                "continuationToken is not valid: pass back the continuationToken of the previous page unchanged",
                code="InvalidContinuationToken",
            )
    entries, next_cursor = platform.audit.list_entries(
        tenant_id, since=_since(since), action=action, limit=limit, continuation=cursor
    )
    return {
        "items": [entry.public_view() for entry in entries],
        "continuationToken": encode_token({"a": next_cursor}) if next_cursor else None,
    }
