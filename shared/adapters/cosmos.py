"""Stores on Cosmos DB (NoSQL API): tenants, jobs, result pages and subscriptions, every query tenant-scoped."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from shared.domain.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.domain.events import Subscription
from shared.domain.jobs import TERMINAL_STATUSES, Job, ResultPage
from shared.domain.tenants import Tenant
from shared.ports import JobBacklog

logger = logging.getLogger(__name__)

RESULTS_INDEXING = {
    "indexingMode": "consistent",
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": "/items/*"}, {"path": "/errors/*"}, {"path": '/"_etag"/?'}],
}


def ensure_schema(client: CosmosClient, database: str) -> DatabaseProxy:
    """Creates the database and containers if missing (idempotent; the deployment creates them in Azure)."""
    db = client.create_database_if_not_exists(database)
    for name in ("tenants", "jobs", "subscriptions", "uploads"):
        db.create_container_if_not_exists(name, partition_key=PartitionKey(path="/tenantId"))
    db.create_container_if_not_exists(
        "results",
        partition_key=PartitionKey(path=["/tenantId", "/jobId"], kind="MultiHash"),
        indexing_policy=RESULTS_INDEXING,
    )
    return db


def _params(**values: Any) -> list[dict[str, Any]]:
    return [{"name": f"@{key}", "value": value} for key, value in values.items()]


class CosmosTenantStore:
    def __init__(self, db: DatabaseProxy) -> None:
        self._c: ContainerProxy = db.get_container_client("tenants")

    def create_tenant(self, tenant: Tenant) -> None:
        try:
            self._c.create_item(tenant.to_doc())
        except CosmosResourceExistsError:
            raise AlreadyExists(f"tenant {tenant.tenant_id} already exists") from None

    def get_tenant(self, tenant_id: str) -> Tenant:
        try:
            return Tenant.from_doc(self._c.read_item(tenant_id, partition_key=tenant_id))
        except CosmosResourceNotFoundError:
            raise NotFound(f"tenant {tenant_id} not found") from None

    def replace_tenant(self, tenant: Tenant) -> Tenant:
        try:
            doc = self._c.replace_item(
                tenant.tenant_id,
                tenant.to_doc(),
                etag=tenant.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except CosmosAccessConditionFailedError:
            raise PreconditionFailed(f"tenant {tenant.tenant_id} changed") from None
        return Tenant.from_doc(doc)

    def list_tenants(self) -> list[Tenant]:
        docs = self._c.query_items("SELECT * FROM c", enable_cross_partition_query=True)
        return [Tenant.from_doc(doc) for doc in docs]


class CosmosJobStore:
    def __init__(self, db: DatabaseProxy) -> None:
        self._c: ContainerProxy = db.get_container_client("jobs")
        self._uploads: ContainerProxy = db.get_container_client("uploads")

    def put_upload_intent(self, tenant_id: str, blob_path: str, intent: dict[str, Any]) -> None:
        doc_id = hashlib.sha256(blob_path.encode()).hexdigest()[:32]
        self._uploads.upsert_item({"id": doc_id, "tenantId": tenant_id, "blobPath": blob_path, **intent})

    def get_upload_intent(self, tenant_id: str, blob_path: str) -> dict[str, Any] | None:
        doc_id = hashlib.sha256(blob_path.encode()).hexdigest()[:32]
        try:
            doc = self._uploads.read_item(doc_id, partition_key=tenant_id)
        except CosmosResourceNotFoundError:
            return None
        return {k: v for k, v in doc.items() if not k.startswith("_") and k not in {"id", "tenantId", "blobPath"}}

    def create_job(self, job: Job) -> bool:
        try:
            doc = self._c.create_item(job.to_doc())
        except CosmosResourceExistsError:
            return False
        job.doc_etag = doc.get("_etag")
        return True

    def get_job(self, tenant_id: str, job_id: str) -> Job:
        try:
            return Job.from_doc(self._c.read_item(job_id, partition_key=tenant_id))
        except CosmosResourceNotFoundError:
            raise NotFound(f"job {job_id} not found") from None

    def replace_job(self, job: Job) -> Job:
        try:
            doc = self._c.replace_item(
                job.job_id, job.to_doc(), etag=job.doc_etag, match_condition=MatchConditions.IfNotModified
            )
        except CosmosAccessConditionFailedError:
            raise PreconditionFailed(f"job {job.job_id} changed") from None
        except CosmosResourceNotFoundError:
            raise NotFound(f"job {job.job_id} not found") from None
        return Job.from_doc(doc)

    def list_jobs(self, tenant_id: str, *, limit: int, continuation: str | None = None) -> tuple[list[Job], str | None]:
        """Keyset paging on createdAt (newest first); `continuation` is "<createdAt>|<ids seen at it>"."""
        before, seen = None, set()
        if continuation:
            before, _, ids = continuation.partition("|")
            seen = set(filter(None, ids.split(",")))
        where = "c.tenantId = @tenantId" + (" AND c.createdAt <= @before" if before else "")
        query = f"SELECT * FROM c WHERE {where} ORDER BY c.createdAt DESC"
        params = _params(tenantId=tenant_id, **({"before": before} if before else {}))
        jobs: list[Job] = []
        for doc in self._c.query_items(query, parameters=params, partition_key=tenant_id):
            if doc["createdAt"] == before and doc["id"] in seen:
                continue
            if len(jobs) == limit:
                last = jobs[-1].created_at
                same = [j.job_id for j in jobs if j.created_at == last]
                if last == before:
                    same += sorted(seen)
                return jobs, f"{last}|{','.join(same)}"
            jobs.append(Job.from_doc(doc))
        return jobs, None

    def list_unfinished(self, *, updated_before: str) -> list[Job]:
        terminal = ", ".join(f"'{status.value}'" for status in TERMINAL_STATUSES)
        query = (
            "SELECT * FROM c WHERE c.updatedAt < @before AND "
            f"(NOT ARRAY_CONTAINS([{terminal}], c.status) OR c.event.published = false)"
        )
        docs = self._c.query_items(query, parameters=_params(before=updated_before), enable_cross_partition_query=True)
        return [Job.from_doc(doc) for doc in docs]

    def list_schedulable(self) -> list[JobBacklog]:
        # An equality filter on a flag every write keeps current: served by the index, so ended jobs (the
        # vast majority of documents) cost nothing; the projection keeps the answer small.
        query = (
            "SELECT c.tenantId, c.jobId, c.createdAt, c.shards.count AS shardCount, "
            "c.shards.dispatched AS dispatched, c.shards.doneCount AS doneCount "
            "FROM c WHERE c.shards.active = true"
        )
        return [
            JobBacklog(
                tenant_id=doc["tenantId"],
                job_id=doc["jobId"],
                created_at=doc.get("createdAt") or "",
                shard_count=int(doc.get("shardCount") or 0),
                dispatched=int(doc.get("dispatched") or 0),
                done=int(doc.get("doneCount") or 0),
            )
            for doc in self._c.query_items(query, enable_cross_partition_query=True)
        ]


class CosmosResultStore:
    def __init__(self, db: DatabaseProxy) -> None:
        self._c: ContainerProxy = db.get_container_client("results")

    def put_page(self, page: ResultPage) -> None:
        self._c.upsert_item(page.to_doc())

    def iter_pages(self, tenant_id: str, job_id: str, *, from_record: int = 0) -> Iterator[ResultPage]:
        query = (
            "SELECT * FROM c WHERE c.tenantId = @tenantId AND c.jobId = @jobId "
            "AND c.lastRecordIndex >= @from ORDER BY c.firstRecordIndex"
        )
        docs = self._c.query_items(
            query,
            parameters=_params(tenantId=tenant_id, jobId=job_id, **{"from": from_record}),
            partition_key=[tenant_id, job_id],
            max_item_count=20,
        )
        for doc in docs:
            yield ResultPage.from_doc(doc)


class CosmosSubscriptionStore:
    def __init__(self, db: DatabaseProxy) -> None:
        self._c: ContainerProxy = db.get_container_client("subscriptions")

    def put_subscription(self, subscription: Subscription) -> None:
        self._c.upsert_item(subscription.to_doc())

    def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription:
        try:
            return Subscription.from_doc(self._c.read_item(subscription_id, partition_key=tenant_id))
        except CosmosResourceNotFoundError:
            raise NotFound(f"subscription {subscription_id} not found") from None

    def list_subscriptions(self, tenant_id: str) -> list[Subscription]:
        docs = self._c.query_items(
            "SELECT * FROM c WHERE c.tenantId = @tenantId ORDER BY c.createdAt",
            parameters=_params(tenantId=tenant_id),
            partition_key=tenant_id,
        )
        return [Subscription.from_doc(doc) for doc in docs]

    def delete_subscription(self, tenant_id: str, subscription_id: str) -> None:
        with contextlib.suppress(CosmosResourceNotFoundError):
            self._c.delete_item(subscription_id, partition_key=tenant_id)
