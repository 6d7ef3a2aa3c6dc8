"""Audit entries: who did what to which target, with what outcome; appended, never changed."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Refused authentications that name no tenant go here; no tenant id can take this value (TENANT_ID_PATTERN has no
# '_'), so no tenant's admin can ever read it.
PLATFORM_PARTITION = "_platform"
ACTOR_KINDS = ("key", "entra", "operator", "anonymous")
SUCCEEDED, FAILED, DENIED = "succeeded", "failed", "denied"
ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*$")


def audit_time() -> str:
    """Microseconds, so entries of one request burst keep their order."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def outcome_of(status_code: int) -> str:
    if status_code in (401, 403):
        return DENIED
    return SUCCEEDED if status_code < 400 else FAILED


@dataclass(frozen=True)
class AuditEntry:
    tenant_id: str
    actor_kind: str
    actor_id: str
    action: str
    target: str
    outcome: str
    request_id: str
    status_code: int | None = None
    time: str = ""
    entry_id: str = ""
    # The figures behind a decision the platform took itself (a rollout promoted or rolled back); small.
    details: dict[str, Any] | None = None

    @classmethod
    def new(cls, tenant_id: str, **fields: Any) -> AuditEntry:
        return cls(tenant_id=tenant_id, time=audit_time(), entry_id=uuid.uuid4().hex, **fields)

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.entry_id,
            "time": self.time,
            "actor": {"kind": self.actor_kind, "id": self.actor_id},
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "requestId": self.request_id,
            "statusCode": self.status_code,
            **({"details": self.details} if self.details else {}),
        }

    def to_doc(self) -> dict[str, Any]:
        return {**self.public_view(), "tenantId": self.tenant_id}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> AuditEntry:
        actor = doc.get("actor") or {}
        return cls(
            tenant_id=doc["tenantId"],
            actor_kind=actor.get("kind", ""),
            actor_id=actor.get("id", ""),
            action=doc.get("action", ""),
            target=doc.get("target", ""),
            outcome=doc.get("outcome", ""),
            request_id=doc.get("requestId", ""),
            status_code=doc.get("statusCode"),
            time=doc.get("time", ""),
            entry_id=doc["id"],
            details=doc.get("details"),
        )
