"""Metering on Cosmos DB: usage records, quota overrides and request-rate counters, in the `usage` container."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from shared.adapters.cosmos import _busy_as_unavailable, _container, _params
from shared.domain.jobs import TERMINAL_STATUSES
from shared.domain.usage import QUOTA_FIELDS, TenantActivity, UsageRecord

logger = logging.getLogger(__name__)

USAGE_CONTAINER = "usage"
QUOTA_ID = "quota"
# A counter outlives its minute by a minute, then Cosmos DB deletes it (the container's defaultTtl -1 turns
# per-item ttl on without expiring anything else: usage records and quotas stay).
RATE_TTL_SECONDS = 120
# A counter's fields are `requests` and `cap`, not count/limit: LIMIT is a keyword of Cosmos DB's query language,
# which the conditional patch's filter predicate is written in.
MAX_CREATE_RACES = 5
USAGE_INDEXING = {
    "indexingMode": "consistent",
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": '/"_etag"/?'}],
}


def ensure_usage_container(db: DatabaseProxy) -> None:
    """The `usage` container (partition /tenantId), as bicep/modules/cosmos.bicep declares it in Azure."""
    db.create_container_if_not_exists(
        USAGE_CONTAINER,
        partition_key=PartitionKey(path="/tenantId"),
        indexing_policy=USAGE_INDEXING,
        default_ttl=-1,
    )


def _rate_id(window: str) -> str:
    return f"rate-{window}"


class CosmosUsageStore:
    def __init__(self, db: DatabaseProxy) -> None:
        self._c = _container(db, USAGE_CONTAINER)
        self._proxy = db.get_container_client(USAGE_CONTAINER)
        self._jobs = _container(db, "jobs")

    def put_usage(self, record: UsageRecord) -> None:
        self._c.upsert_item(record.to_doc(), no_response=True)

    def list_usage(self, tenant_id: str, *, ended_from: str, ended_before: str) -> list[UsageRecord]:
        query = (
            "SELECT * FROM c WHERE c.tenantId = @tenantId AND c.kind = 'usage' "
            "AND c.endedAt >= @from AND c.endedAt < @before"
        )
        params = _params(tenantId=tenant_id, before=ended_before, **{"from": ended_from})
        docs = self._c.query_items(query, parameters=params, partition_key=tenant_id)
        return [UsageRecord.from_doc(doc) for doc in docs]

    def records_ended(self, tenant_id: str, *, ended_from: str, ended_before: str) -> int:
        query = (
            "SELECT VALUE SUM(c.records) FROM c WHERE c.tenantId = @tenantId AND c.kind = 'usage' "
            "AND c.endedAt >= @from AND c.endedAt < @before"
        )
        params = _params(tenantId=tenant_id, before=ended_before, **{"from": ended_from})
        # One partition's aggregate: a single number back, however many jobs ended that day (none: 0 or nothing).
        values: list[Any] = list(self._c.query_items(query, parameters=params, partition_key=tenant_id))
        return sum(int(value or 0) for value in values)

    def get_quota(self, tenant_id: str) -> dict[str, int | None]:
        try:
            doc = self._c.read_item(QUOTA_ID, partition_key=tenant_id)
        except CosmosResourceNotFoundError:
            return {}
        limits = doc.get("limits") or {}
        return {key: limits.get(key) for key in QUOTA_FIELDS if key in limits}

    def put_quota(self, tenant_id: str, overrides: dict[str, int | None]) -> dict[str, int | None]:
        for _ in range(MAX_CREATE_RACES):
            try:
                doc = self._c.read_item(QUOTA_ID, partition_key=tenant_id)
            except CosmosResourceNotFoundError:
                doc = {"id": QUOTA_ID, "kind": "quota", "tenantId": tenant_id, "limits": {}}
                merged = {**doc["limits"], **overrides}
                try:
                    self._c.create_item({**doc, "limits": merged})
                except CosmosResourceExistsError:
                    continue
                return merged
            merged = {**(doc.get("limits") or {}), **overrides}
            body = {k: v for k, v in doc.items() if not k.startswith("_")} | {"limits": merged}
            try:
                self._c.replace_item(QUOTA_ID, body, etag=doc["_etag"], match_condition=MatchConditions.IfNotModified)
            except CosmosAccessConditionFailedError:
                continue
            return merged
        raise RuntimeError(f"the quota of tenant {tenant_id} kept changing while it was set")

    def activity(self, tenant_id: str) -> TenantActivity:
        terminal = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL_STATUSES))
        query = (
            "SELECT c.id, c.createdAt, c.counts.records AS records FROM c "
            f"WHERE c.tenantId = @tenantId AND NOT ARRAY_CONTAINS([{terminal}], c.status)"
        )
        docs = list(self._jobs.query_items(query, parameters=_params(tenantId=tenant_id), partition_key=tenant_id))
        return TenantActivity(
            unfinished_jobs=len(docs),
            records_in_flight=sum(int(doc.get("records") or 0) for doc in docs),
            jobs=tuple(sorted((str(doc.get("createdAt") or ""), str(doc["id"])) for doc in docs)),
        )

    def count_request(self, tenant_id: str, window: str, limit: Callable[[], int]) -> bool:
        """One conditional patch (`incr`, filtered on the count being under the limit): the service applies it
        atomically, so concurrent requests of every process are counted exactly, without ETag retries.

        The window's first request (a 404) creates the counter with the tenant's limit; of two creators
        racing, the loser patches the winner's counter.
        """
        for _ in range(MAX_CREATE_RACES):
            try:
                with _busy_as_unavailable():
                    self._proxy.patch_item(
                        _rate_id(window),
                        partition_key=tenant_id,
                        patch_operations=[{"op": "incr", "path": "/requests", "value": 1}],
                        filter_predicate="FROM c WHERE c.cap = 0 OR c.requests < c.cap",
                        no_response=True,
                    )
                return True
            except CosmosAccessConditionFailedError:
                return False  # the filter did not match: the limit is reached
            except CosmosResourceNotFoundError:
                pass
            cap = max(0, int(limit()))
            doc = {
                "id": _rate_id(window),
                "kind": "rate",
                "tenantId": tenant_id,
                "window": window,
                "requests": 1,
                "cap": cap,
                "ttl": RATE_TTL_SECONDS,
            }
            try:
                self._c.create_item(doc)
                return True
            except CosmosResourceExistsError:
                continue
        raise RuntimeError(f"the rate counter of tenant {tenant_id} for {window} could not be created")

    def requests_in(self, tenant_id: str, window: str) -> int:
        try:
            return int(self._c.read_item(_rate_id(window), partition_key=tenant_id).get("requests", 0))
        except CosmosResourceNotFoundError:
            return 0

    def set_rate_limit(self, tenant_id: str, window: str, limit: int) -> None:
        try:
            with _busy_as_unavailable():
                self._proxy.patch_item(
                    _rate_id(window),
                    partition_key=tenant_id,
                    patch_operations=[{"op": "set", "path": "/cap", "value": max(0, limit)}],
                    no_response=True,
                )
        except CosmosResourceNotFoundError:
            pass  # no request in this window yet: its first one reads the new quota
