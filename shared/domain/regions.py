"""Regional stamps: a tenant's home (the region and the public API URL of the stamp that keeps its data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.domain.jobs import utcnow


@dataclass(frozen=True)
class TenantHome:
    """Where a tenant lives: set once by `aiaas tenants create`, never moved (no tenant migrates between stamps)."""

    tenant_id: str
    region: str
    api_url: str
    created_at: str = ""

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.tenant_id,
            "tenantId": self.tenant_id,
            "region": self.region,
            "apiUrl": self.api_url,
            "createdAt": self.created_at or utcnow(),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TenantHome:
        return cls(
            tenant_id=str(doc["tenantId"]),
            region=str(doc["region"]),
            api_url=str(doc["apiUrl"]),
            created_at=str(doc.get("createdAt", "")),
        )
