"""Tenants, their API keys (several per tenant, each with a role) and the Entra ID tenant a tenant answers for."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.domain.errors import InvalidInput

TENANT_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,30}[a-z0-9])$")
API_KEY_PREFIX = "aiaas_"
# The roles (contract "Identity, roles and keys"), each holding every right of the ones before it.
READER, SUBMITTER, ADMIN = "AIaaS.Reader", "AIaaS.Submitter", "AIaaS.Admin"
ROLES = (READER, SUBMITTER, ADMIN)
# A key is aiaas_<tenant>.<key id>.<secret>: it names its tenant and its key, so checking it is one point read
# of the tenant (whose document holds the keys' hashes), and the secret (256 random bits) proves it.
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")
KEY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
# Keys live in the tenant's document: Cosmos DB items are at most 2 MB (service quotas); 100 keys of ~250 bytes
# each stay far below that, and no tenant needs more live keys than that.
MAX_KEYS_PER_TENANT = 100
# Entra ID tenant ids are GUIDs (the `tid` claim).
ENTRA_TENANT_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def validate_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID_PATTERN.fullmatch(tenant_id or ""):
        raise InvalidInput(
            f"tenant id {tenant_id!r} must be 3-32 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit",
            code="InvalidTenantId",
        )
    return tenant_id


def validate_entra_tenant(tid: str) -> str:
    tid = (tid or "").lower()
    if not ENTRA_TENANT_PATTERN.fullmatch(tid):
        raise InvalidInput(f"Entra tenant id {tid[:64]!r} must be a GUID", code="InvalidEntraTenant")
    return tid


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


@dataclass(frozen=True)
class KeyParts:
    tenant_id: str
    key_id: str


def parse_api_key(api_key: str) -> KeyParts | None:
    """The tenant and key id an API key names, or None when it is not shaped like one of ours."""
    if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > 200:
        return None
    parts = api_key.removeprefix(API_KEY_PREFIX).split(".")
    if len(parts) != 3:
        return None
    tenant_id, key_id, secret = parts
    if not (TENANT_ID_PATTERN.fullmatch(tenant_id) and _KEY_ID.fullmatch(key_id) and _SECRET.fullmatch(secret)):
        return None
    return KeyParts(tenant_id, key_id)


@dataclass(frozen=True)
class ApiKey:
    """One key of a tenant, as stored: the secret only as its sha256 (it has 256 random bits: no salt needed)."""

    key_id: str
    name: str
    role: str
    key_hash: str
    created_at: str

    def public_view(self) -> dict[str, Any]:
        return {"id": self.key_id, "name": self.name, "role": self.role, "createdAt": self.created_at}

    def to_doc(self) -> dict[str, Any]:
        return {**self.public_view(), "hash": self.key_hash}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ApiKey:
        return cls(doc["id"], doc["name"], doc["role"], doc["hash"], doc.get("createdAt", ""))


def new_api_key(tenant_id: str, name: str, role: str, created_at: str) -> tuple[ApiKey, str]:
    """A fresh key of the tenant: what is stored, and the key itself (shown once, never stored)."""
    key_id = uuid.uuid4().hex
    secret = f"{API_KEY_PREFIX}{tenant_id}.{key_id}.{secrets.token_urlsafe(32)}"
    return ApiKey(key_id, name, role, hash_key(secret), created_at), secret


@dataclass
class Tenant:
    tenant_id: str
    status: str = "active"
    created_at: str = ""
    keys: list[ApiKey] = field(default_factory=list)
    # The Entra ID tenant (`tid`) whose tokens act for this tenant; the map from tid to tenant is kept apart
    # (one point read per token), this is its copy for display.
    entra_tenant: str | None = None
    etag: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def key_for(self, api_key: str) -> ApiKey | None:
        """The stored key that `api_key` is, compared in constant time; None for a wrong or revoked one."""
        parts = parse_api_key(api_key)
        if parts is None or parts.tenant_id != self.tenant_id:
            return None
        candidate = hash_key(api_key)
        for key in self.keys:
            if key.key_id == parts.key_id and hmac.compare_digest(candidate, key.key_hash):
                return key
        return None

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "id": self.tenant_id,
            "tenantId": self.tenant_id,
            "status": self.status,
            "createdAt": self.created_at,
            "keys": [key.to_doc() for key in self.keys],
        }
        if self.entra_tenant:
            doc["entraTenant"] = self.entra_tenant
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Tenant:
        return cls(
            tenant_id=doc["tenantId"],
            status=doc.get("status", "active"),
            created_at=doc.get("createdAt", ""),
            keys=[ApiKey.from_doc(key) for key in doc.get("keys", [])],
            entra_tenant=doc.get("entraTenant"),
            etag=doc.get("_etag"),
        )
