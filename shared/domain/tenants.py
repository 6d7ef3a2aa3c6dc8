"""Tenants and their API keys."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from shared.domain.errors import InvalidInput

TENANT_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,30}[a-z0-9])$")
API_KEY_PREFIX = "aiaas_"


def validate_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID_PATTERN.fullmatch(tenant_id or ""):
        raise InvalidInput(
            f"tenant id {tenant_id!r} must be 3-32 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit",
            code="InvalidTenantId",
        )
    return tenant_id


def container_for(tenant_id: str) -> str:
    return f"tenant-{tenant_id}"


def tenant_from_container(container: str) -> str | None:
    """The tenant that owns a blob container, or None when the container is not a tenant's."""
    if not container.startswith("tenant-"):
        return None
    candidate = container.removeprefix("tenant-")
    return candidate if TENANT_ID_PATTERN.fullmatch(candidate) else None


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key(tenant_id: str) -> str:
    """A fresh API key; it names its tenant so a lookup is one point read, and the secret part proves it."""
    return f"{API_KEY_PREFIX}{tenant_id}.{secrets.token_urlsafe(32)}"


def tenant_of_key(api_key: str) -> str | None:
    if not api_key.startswith(API_KEY_PREFIX) or "." not in api_key:
        return None
    tenant_id = api_key.removeprefix(API_KEY_PREFIX).split(".", 1)[0]
    return tenant_id if TENANT_ID_PATTERN.fullmatch(tenant_id) else None


@dataclass
class Tenant:
    tenant_id: str
    status: str = "active"
    created_at: str = ""
    key_hashes: list[str] = field(default_factory=list)
    etag: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def accepts_key(self, api_key: str) -> bool:
        candidate = hash_key(api_key)
        return any(hmac.compare_digest(candidate, known) for known in self.key_hashes)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.tenant_id,
            "tenantId": self.tenant_id,
            "status": self.status,
            "createdAt": self.created_at,
            "keyHashes": list(self.key_hashes),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Tenant:
        return cls(
            tenant_id=doc["tenantId"],
            status=doc.get("status", "active"),
            created_at=doc.get("createdAt", ""),
            key_hashes=list(doc.get("keyHashes", [])),
            etag=doc.get("_etag"),
        )
