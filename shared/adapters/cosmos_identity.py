"""Identity stores on Cosmos DB: the Entra tenant map and the append-only audit log."""

from __future__ import annotations

from azure.cosmos import DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import CosmosResourceExistsError, CosmosResourceNotFoundError

from shared.adapters.cosmos import _container, _params, newest_first_page, parse_keyset_token
from shared.domain.audit import AuditEntry
from shared.domain.errors import AlreadyExists, NotFound

ENTRA_CONTAINER, AUDIT_CONTAINER = "entraTenants", "audit"
# The audit log is read by time, newest first, and filtered by action; the rest of an entry is never queried.
AUDIT_INDEXING = {
    "indexingMode": "consistent",
    "includedPaths": [{"path": "/tenantId/?"}, {"path": "/time/?"}, {"path": "/action/?"}],
    "excludedPaths": [{"path": "/*"}, {"path": '/"_etag"/?'}],
}


def ensure_identity_schema(db: DatabaseProxy) -> None:
    """Creates the containers if missing (idempotent; bicep/modules/cosmos.bicep creates them in Azure)."""
    # Looked up by the token's tid before the platform tenant is known, so the tid is the partition key:
    # a point read, and a conditional create makes one tid map to exactly one tenant.
    db.create_container_if_not_exists(ENTRA_CONTAINER, partition_key=PartitionKey(path="/tid"))
    db.create_container_if_not_exists(
        AUDIT_CONTAINER, partition_key=PartitionKey(path="/tenantId"), indexing_policy=AUDIT_INDEXING
    )


class CosmosEntraTenantMap:
    def __init__(self, db: DatabaseProxy) -> None:
        self._c = _container(db, ENTRA_CONTAINER)

    def map_tenant(self, tid: str, tenant_id: str) -> None:
        try:
            self._c.create_item({"id": tid, "tid": tid, "tenantId": tenant_id})
        except CosmosResourceExistsError:
            raise AlreadyExists(f"Entra tenant {tid} already acts for a tenant") from None

    def tenant_for(self, tid: str) -> str:
        try:
            doc = self._c.read_item(tid, partition_key=tid)
        except CosmosResourceNotFoundError:
            raise NotFound(f"Entra tenant {tid} is not mapped") from None
        return str(doc["tenantId"])


class CosmosAuditLog:
    """Only create_item and queries: this adapter has no path that replaces, upserts or deletes an entry."""

    def __init__(self, db: DatabaseProxy) -> None:
        self._c = _container(db, AUDIT_CONTAINER)

    def append(self, entry: AuditEntry) -> None:
        self._c.create_item(entry.to_doc())

    def list_entries(
        self,
        tenant_id: str,
        *,
        since: str | None = None,
        action: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        """Keyset paging on time (newest first); `continuation` is "<time>|<ids seen at it>"."""
        before, seen = parse_keyset_token(continuation)
        where = ["c.tenantId = @tenantId"]
        values: dict[str, str] = {"tenantId": tenant_id}
        for clause, name, value in (
            ("c.time <= @before", "before", before),
            ("c.time >= @since", "since", since),
            ("c.action = @action", "action", action),
        ):
            if value:
                where.append(clause)
                values[name] = value
        query = f"SELECT * FROM c WHERE {' AND '.join(where)} ORDER BY c.time DESC"
        docs = self._c.query_items(query, parameters=_params(**values), partition_key=tenant_id)
        page, token = newest_first_page(docs, "time", limit=limit, before=before, seen=seen)
        return [AuditEntry.from_doc(doc) for doc in page], token
