"""In-memory implementations of every port in shared/ports.py, for unit tests (no network, no stand-ins).

Each fake keeps the semantics the services rely on: blob ETags change on every write and guard conditional
reads; job documents carry an `_etag` bumped on every write so optimistic concurrency is real; every store is
thread-safe and hands out copies, never its own objects.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.domain.audit import AuditEntry
from shared.domain.delivery import DeadLetter
from shared.domain.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed
from shared.domain.events import PlatformEvent, Subscription
from shared.domain.jobs import TERMINAL_STATUSES, Job, ResultPage, ShardMessage
from shared.domain.models import ModelCard
from shared.domain.regions import TenantHome
from shared.domain.tenants import Tenant, container_for
from shared.domain.usage import TenantActivity, UsageRecord
from shared.inference.registry import BlobModelRegistry
from shared.ports import BlobInfo, JobBacklog, TrainedModel, TrainingData
from shared.services.platform import Platform
from shared.services.tenants import create_tenant

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "build" / "models"
SAMPLES_DIR = REPO_ROOT / "build" / "samples"
MODEL_NAME = "breast-cancer-classifier"
API_URL = "http://testserver/api"

_etags = itertools.count(1)
_etag_lock = threading.Lock()


def _new_etag() -> str:
    """A fresh, unquoted ETag (the adapters hand ETags out without quotes)."""
    with _etag_lock:
        return f"0x8DC{next(_etags):013X}"


def _plain(etag: str | None) -> str:
    return (etag or "").strip('"')


# Blob storage


class InMemoryBlobStore:
    """containers -> {path: (bytes, etag, content_type)}."""

    def __init__(self, *, chunk_size: int = 64 * 1024) -> None:
        self.containers: dict[str, dict[str, tuple[bytes, str, str | None]]] = {}
        self.chunk_size = chunk_size
        self.upload_urls: list[tuple[str, str, timedelta]] = []
        # (container, path) -> {block id: bytes}: staged blocks, and the ids committed so far
        self.staged: dict[tuple[str, str], dict[str, bytes]] = {}
        self.committed: dict[tuple[str, str], dict[str, bytes]] = {}
        # (container, path) -> the copy source of a blob a Copy Blob wrote (Azure keeps x-ms-copy-* on it)
        self.copy_sources: dict[tuple[str, str], str] = {}
        self._lock = threading.RLock()

    def ensure_container(self, container: str) -> None:
        with self._lock:
            self.containers.setdefault(container, {})

    def list_containers(self, *, prefix: str = "") -> Iterator[str]:
        with self._lock:
            names = sorted(name for name in self.containers if name.startswith(prefix))
        yield from names

    def list_blobs(self, container: str, *, prefix: str = "") -> Iterator[BlobInfo]:
        with self._lock:
            blobs = self.containers.get(container, {})
            infos = [
                self._info(container, path, etag, len(data), content_type)
                for path, (data, etag, content_type) in sorted(blobs.items())
                if path.startswith(prefix)
            ]
        yield from infos

    def _info(self, container: str, path: str, etag: str, size: int, content_type: str | None) -> BlobInfo:
        source = self.copy_sources.get((container, path))
        if source is None:
            return BlobInfo(path, etag, size, content_type)
        copy_id = f"copy-{etag}"
        return BlobInfo(path, etag, size, content_type, copy_id=copy_id, copy_source=source, copy_status="success")

    def copy_blob(self, container: str, path: str, source_url: str, data: bytes) -> str:
        """What a Copy Blob leaves behind: the bytes, and the copy properties naming the source."""
        with self._lock:
            etag = self.write_bytes(container, path, data)
            self.copy_sources[(container, path)] = source_url
            return etag

    def _entry(self, container: str, path: str) -> tuple[bytes, str, str | None]:
        with self._lock:
            try:
                return self.containers[container][path]
            except KeyError:
                raise NotFound(f"blob {container}/{path} not found") from None

    def get_info(self, container: str, path: str) -> BlobInfo:
        data, etag, content_type = self._entry(container, path)
        return self._info(container, path, etag, len(data), content_type)

    def read_bytes(self, container: str, path: str) -> bytes:
        return self._entry(container, path)[0]

    def iter_chunks(
        self, container: str, path: str, *, start: int = 0, end: int | None = None, etag: str | None = None
    ) -> Iterator[bytes]:
        # A generator like the Azure adapter: nothing happens (and nothing is raised) until the first chunk.
        if end is not None and end <= start:
            return
        data, current, _ = self._entry(container, path)
        if etag and _plain(etag) != _plain(current):
            raise PreconditionFailed(f"blob {container}/{path} changed since its job began")
        stop = len(data) if end is None else min(end, len(data))
        for offset in range(start, stop, self.chunk_size):
            yield data[offset : min(offset + self.chunk_size, stop)]

    def write_bytes(self, container: str, path: str, data: bytes, *, content_type: str | None = None) -> str:
        etag = _new_etag()
        with self._lock:
            self.containers.setdefault(container, {})[path] = (bytes(data), etag, content_type)
            self.copy_sources.pop((container, path), None)  # a Put Blob replaces the copy properties too
        return etag

    def replace_bytes(
        self, container: str, path: str, data: bytes, *, etag: str, content_type: str | None = None
    ) -> str:
        """If-Match, as Azure: PreconditionFailed when the blob changed since `etag`."""
        with self._lock:
            current = self.containers.get(container, {}).get(path, (b"", "", None))[1]
            if not current or _plain(current) != _plain(etag):
                raise PreconditionFailed(f"blob {container}/{path} changed since it was read")
            return self.write_bytes(container, path, data, content_type=content_type)

    def write_chunks(
        self, container: str, path: str, chunks: Iterable[bytes], *, content_type: str | None = None
    ) -> str:
        return self.write_bytes(container, path, b"".join(chunks), content_type=content_type)

    def stage_block(self, container: str, path: str, block_id: str, data: bytes) -> None:
        with self._lock:
            self.staged.setdefault((container, path), {})[block_id] = bytes(data)

    def commit_staged(self, container: str, path: str, *, content_type: str | None = None) -> int:
        with self._lock:
            blocks = {**self.committed.get((container, path), {}), **self.staged.pop((container, path), {})}
            self.committed[(container, path)] = blocks
            self.write_bytes(container, path, b"".join(blocks[i] for i in sorted(blocks)), content_type=content_type)
            return len(blocks)

    def upload_url(self, container: str, path: str, *, expires_in: timedelta) -> str:
        expiry = (datetime.now(UTC) + expires_in).isoformat(timespec="seconds").replace("+00:00", "Z")
        with self._lock:
            self.upload_urls.append((container, path, expires_in))
        return f"https://fakestorage.blob.local/{container}/{path}?sp=cw&se={expiry}&sig=fake"


# Cosmos-like stores


class InMemorySecretStore:
    """The SecretStore port in memory: names checked as Key Vault checks them (adapters.secrets.vault_name)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def put(self, tenant_id: str, name: str, value: str) -> None:
        from shared.adapters.secrets import vault_name

        self.values[vault_name(tenant_id, name)] = value

    def get(self, tenant_id: str, name: str) -> str:
        from shared.adapters.secrets import vault_name

        try:
            return self.values[vault_name(tenant_id, name)]
        except KeyError:
            raise NotFound(f"no secret {name!r}") from None

    def delete(self, tenant_id: str, name: str) -> None:
        from shared.adapters.secrets import vault_name

        self.values.pop(vault_name(tenant_id, name), None)


class InMemoryTenantStore:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def create_tenant(self, tenant: Tenant) -> None:
        with self._lock:
            if tenant.tenant_id in self.docs:
                raise AlreadyExists(f"tenant {tenant.tenant_id} already exists")
            doc = tenant.to_doc()
            doc["_etag"] = _new_etag()
            self.docs[tenant.tenant_id] = doc
            tenant.etag = doc["_etag"]

    def get_tenant(self, tenant_id: str) -> Tenant:
        with self._lock:
            doc = self.docs.get(tenant_id)
            if doc is None:
                raise NotFound(f"tenant {tenant_id} not found")
            return Tenant.from_doc(copy.deepcopy(doc))

    def replace_tenant(self, tenant: Tenant) -> Tenant:
        with self._lock:
            current = self.docs.get(tenant.tenant_id)
            if current is None:
                raise NotFound(f"tenant {tenant.tenant_id} not found")
            if tenant.etag != current["_etag"]:
                raise PreconditionFailed(f"tenant {tenant.tenant_id} changed")
            doc = copy.deepcopy(tenant.to_doc())
            doc["_etag"] = _new_etag()
            self.docs[tenant.tenant_id] = doc
            return Tenant.from_doc(copy.deepcopy(doc))

    def list_tenants(self) -> list[Tenant]:
        with self._lock:
            return [Tenant.from_doc(copy.deepcopy(doc)) for doc in self.docs.values()]


class InMemoryEntraTenantMap:
    def __init__(self) -> None:
        self.tenants: dict[str, str] = {}
        self._lock = threading.Lock()

    def map_tenant(self, tid: str, tenant_id: str) -> None:
        with self._lock:
            if tid in self.tenants:
                raise AlreadyExists(f"Entra tenant {tid} already acts for a tenant")
            self.tenants[tid] = tenant_id

    def tenant_for(self, tid: str) -> str:
        with self._lock:
            if tid not in self.tenants:
                raise NotFound(f"Entra tenant {tid} is not mapped")
            return self.tenants[tid]


class InMemoryTenantDirectory:
    """The global tenant directory; `reads` counts point reads (the per-process cache saves them)."""

    def __init__(self) -> None:
        self.homes: dict[str, TenantHome] = {}
        self.reads = 0
        self._lock = threading.Lock()

    def home_of(self, tenant_id: str) -> TenantHome | None:
        with self._lock:
            self.reads += 1
            return self.homes.get(tenant_id)

    def place(self, home: TenantHome) -> TenantHome:
        with self._lock:
            return self.homes.setdefault(home.tenant_id, home)

    def home_of_entra(self, tid: str) -> TenantHome | None:
        return self.home_of(f"tid:{tid}")

    def place_entra(self, tid: str, home: TenantHome) -> TenantHome:
        with self._lock:
            return self.homes.setdefault(f"tid:{tid}", home)


class InMemoryAuditLog:
    """Append-only, as CosmosAuditLog: entries are only ever added."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> None:
        with self._lock:
            self.entries.append(entry)

    def list_entries(
        self,
        tenant_id: str,
        *,
        since: str | None = None,
        action: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        with self._lock:
            chosen = [
                e
                for e in self.entries
                if e.tenant_id == tenant_id and (not since or e.time >= since) and (not action or e.action == action)
            ]
        chosen.sort(key=lambda e: e.time, reverse=True)
        # The same keyset cursor as CosmosAuditLog: "<time>|<ids seen at it>".
        before, _, ids = (continuation or "").partition("|")
        seen = set(filter(None, ids.split(",")))
        page: list[AuditEntry] = []
        for entry in chosen:
            if before and (entry.time > before or (entry.time == before and entry.entry_id in seen)):
                continue
            if len(page) == limit:
                last = page[-1].time
                same = [e.entry_id for e in page if e.time == last] + (sorted(seen) if last == before else [])
                return page, f"{last}|{','.join(same)}"
            page.append(entry)
        return page, None


class InMemoryJobStore:
    """Job documents keyed by (tenantId, id), each with an `_etag` that every write replaces."""

    def __init__(self, *, read_delay: float = 0.0) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.intents: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0
        self.conflicts = 0
        # Seconds a reader sleeps after its read: widens read-modify-write windows so races really happen.
        self.read_delay = read_delay
        self._lock = threading.Lock()

    def _store(self, key: tuple[str, str], job: Job) -> dict[str, Any]:
        doc = copy.deepcopy(job.to_doc())
        doc["_etag"] = _new_etag()
        self.docs[key] = doc
        self.writes += 1
        return doc

    def create_job(self, job: Job) -> bool:
        key = (job.tenant_id, job.job_id)
        with self._lock:
            if key in self.docs:
                return False
            job.doc_etag = self._store(key, job)["_etag"]
            return True

    def get_job(self, tenant_id: str, job_id: str) -> Job:
        with self._lock:
            doc = self.docs.get((tenant_id, job_id))
            if doc is None:
                raise NotFound(f"job {job_id} not found")
            job = Job.from_doc(copy.deepcopy(doc))
        if self.read_delay:
            time.sleep(self.read_delay)
        return job

    def replace_job(self, job: Job) -> Job:
        key = (job.tenant_id, job.job_id)
        with self._lock:
            current = self.docs.get(key)
            if current is None:
                raise NotFound(f"job {job.job_id} not found")
            if job.doc_etag != current["_etag"]:
                self.conflicts += 1
                raise PreconditionFailed(f"job {job.job_id} changed")
            return Job.from_doc(copy.deepcopy(self._store(key, job)))

    def list_jobs(self, tenant_id: str, *, limit: int, continuation: str | None = None) -> tuple[list[Job], str | None]:
        """Keyset paging on createdAt, newest first; `continuation` is "<createdAt>|<ids seen at it>" (as Cosmos)."""
        before, seen = None, set()
        if continuation:
            before, _, ids = continuation.partition("|")
            seen = set(filter(None, ids.split(",")))
        with self._lock:
            docs = [
                copy.deepcopy(doc)
                for (tenant, _), doc in self.docs.items()
                if tenant == tenant_id and (before is None or doc["createdAt"] <= before)
            ]
        docs.sort(key=lambda doc: doc["id"])
        docs.sort(key=lambda doc: doc["createdAt"], reverse=True)
        jobs: list[Job] = []
        for doc in docs:
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

    def put_upload_intent(self, tenant_id: str, blob_path: str, intent: dict[str, Any]) -> None:
        with self._lock:
            self.intents[(tenant_id, blob_path)] = copy.deepcopy(intent)

    def get_upload_intent(self, tenant_id: str, blob_path: str) -> dict[str, Any] | None:
        with self._lock:
            intent = self.intents.get((tenant_id, blob_path))
            return None if intent is None else copy.deepcopy(intent)

    def list_unfinished(self, *, updated_before: str) -> list[Job]:
        terminal = {status.value for status in TERMINAL_STATUSES}
        with self._lock:
            docs = [copy.deepcopy(doc) for doc in self.docs.values()]
        return [
            Job.from_doc(doc)
            for doc in docs
            if doc["updatedAt"] < updated_before and (doc["status"] not in terminal or not doc["event"]["published"])
        ]

    def list_with_drift(
        self,
        tenant_id: str,
        model_name: str,
        *,
        completed_from: str,
        completed_before: str,
        limit: int,
        continuation: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """As the Cosmos query: the tenant's jobs of the model with drift, completed in the range, newest first."""
        from shared.adapters.cosmos import newest_first_page, parse_keyset_token

        before, seen = parse_keyset_token(continuation)
        with self._lock:
            docs = [
                copy.deepcopy(doc)
                for (tenant, _), doc in self.docs.items()
                if tenant == tenant_id
                and doc["model"]["name"] == model_name
                and isinstance(doc.get("drift"), dict)
                and doc.get("completedAt")
                and completed_from <= doc["completedAt"]
                and (doc["completedAt"] <= before if before else doc["completedAt"] < completed_before)
            ]
        docs.sort(key=lambda doc: doc["id"])
        docs.sort(key=lambda doc: doc["completedAt"], reverse=True)
        page, token = newest_first_page(docs, "completedAt", limit=limit, before=before, seen=seen)
        return [Job.from_doc(doc) for doc in page], token

    def list_schedulable(self) -> list[JobBacklog]:
        """The same projection as the Cosmos query, over the documents as stored (the `active` flag)."""
        with self._lock:
            docs = [copy.deepcopy(doc) for doc in self.docs.values() if doc["shards"].get("active")]
        return [
            JobBacklog(
                doc["tenantId"],
                doc["jobId"],
                doc["createdAt"],
                doc["shards"]["count"],
                doc["shards"]["dispatched"],
                doc["shards"]["doneCount"],
            )
            for doc in docs
        ]


class InMemoryResultStore:
    """Result page documents keyed by (tenantId, jobId, id); put_page is an upsert."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.puts = 0
        self._lock = threading.Lock()

    def put_page(self, page: ResultPage) -> None:
        with self._lock:
            self.docs[(page.tenant_id, page.job_id, page.doc_id)] = copy.deepcopy(page.to_doc())
            self.puts += 1

    def iter_pages(self, tenant_id: str, job_id: str, *, from_record: int = 0) -> Iterator[ResultPage]:
        with self._lock:
            docs = [
                copy.deepcopy(doc)
                for (tenant, job, _), doc in self.docs.items()
                if tenant == tenant_id and job == job_id and doc["lastRecordIndex"] >= from_record
            ]
        docs.sort(key=lambda doc: doc["firstRecordIndex"])
        for doc in docs:
            yield ResultPage.from_doc(doc)


class InMemorySubscriptionStore:
    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def put_subscription(self, subscription: Subscription) -> None:
        with self._lock:
            self.docs[(subscription.tenant_id, subscription.subscription_id)] = copy.deepcopy(subscription.to_doc())

    def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription:
        with self._lock:
            doc = self.docs.get((tenant_id, subscription_id))
            if doc is None:
                raise NotFound(f"subscription {subscription_id} not found")
            return Subscription.from_doc(copy.deepcopy(doc))

    def list_subscriptions(self, tenant_id: str) -> list[Subscription]:
        with self._lock:
            docs = [copy.deepcopy(doc) for (tenant, _), doc in self.docs.items() if tenant == tenant_id]
        docs.sort(key=lambda doc: doc["createdAt"])
        return [Subscription.from_doc(doc) for doc in docs]

    def delete_subscription(self, tenant_id: str, subscription_id: str) -> None:
        with self._lock:
            self.docs.pop((tenant_id, subscription_id), None)


class InMemoryUsageStore:
    """Usage records by (tenantId, jobId) (put_usage is an upsert), quota overrides, and per-minute counters.

    `activity` reads the job documents of the InMemoryJobStore it is given, as the Cosmos adapter queries the
    jobs container.
    """

    def __init__(self, jobs: InMemoryJobStore) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.quotas: dict[str, dict[str, int | None]] = {}
        self.counters: dict[tuple[str, str], dict[str, int]] = {}
        self.puts = 0
        self._jobs = jobs
        self._lock = threading.RLock()

    def put_usage(self, record: UsageRecord) -> None:
        with self._lock:
            self.records[(record.tenant_id, record.job_id)] = copy.deepcopy(record.to_doc())
            self.puts += 1

    def list_usage(self, tenant_id: str, *, ended_from: str, ended_before: str) -> list[UsageRecord]:
        with self._lock:
            docs = [copy.deepcopy(doc) for (tenant, _), doc in self.records.items() if tenant == tenant_id]
        return [UsageRecord.from_doc(doc) for doc in docs if ended_from <= doc["endedAt"] < ended_before]

    def records_ended(self, tenant_id: str, *, ended_from: str, ended_before: str) -> int:
        return sum(r.records for r in self.list_usage(tenant_id, ended_from=ended_from, ended_before=ended_before))

    def get_quota(self, tenant_id: str) -> dict[str, int | None]:
        with self._lock:
            return dict(self.quotas.get(tenant_id, {}))

    def put_quota(self, tenant_id: str, overrides: dict[str, int | None]) -> dict[str, int | None]:
        with self._lock:
            merged = {**self.quotas.get(tenant_id, {}), **overrides}
            self.quotas[tenant_id] = merged
            return dict(merged)

    def activity(self, tenant_id: str) -> TenantActivity:
        terminal = {status.value for status in TERMINAL_STATUSES}
        with self._jobs._lock:
            docs = [
                doc
                for (tenant, _), doc in self._jobs.docs.items()
                if tenant == tenant_id and doc["status"] not in terminal
            ]
            return TenantActivity(
                unfinished_jobs=len(docs),
                records_in_flight=sum(int(doc["counts"]["records"]) for doc in docs),
                jobs=tuple(sorted((doc["createdAt"], doc["id"]) for doc in docs)),
            )

    def count_request(self, tenant_id: str, window: str, limit: Callable[[], int]) -> bool:
        with self._lock:
            counter = self.counters.get((tenant_id, window))
            if counter is None:
                counter = self.counters[(tenant_id, window)] = {"count": 0, "limit": max(0, limit())}
            if counter["limit"] and counter["count"] >= counter["limit"]:
                return False
            counter["count"] += 1
            return True

    def requests_in(self, tenant_id: str, window: str) -> int:
        with self._lock:
            return self.counters.get((tenant_id, window), {}).get("count", 0)

    def set_rate_limit(self, tenant_id: str, window: str, limit: int) -> None:
        with self._lock:
            if (tenant_id, window) in self.counters:
                self.counters[(tenant_id, window)]["limit"] = max(0, limit)


# Messaging


class InMemoryJobQueue:
    """Records every enqueued shard message, in order."""

    def __init__(self) -> None:
        self.messages: list[ShardMessage] = []
        self._lock = threading.Lock()

    def enqueue(self, messages: Sequence[ShardMessage]) -> None:
        with self._lock:
            self.messages.extend(messages)

    def drain(self) -> list[ShardMessage]:
        """The messages enqueued so far, removing them (as a worker receiving them would)."""
        with self._lock:
            taken, self.messages = self.messages, []
        return taken


class InMemoryEventPublisher:
    """Records every published event, in order."""

    def __init__(self) -> None:
        self.events: list[PlatformEvent] = []
        self._lock = threading.Lock()

    def publish(self, events: Sequence[PlatformEvent]) -> None:
        with self._lock:
            self.events.extend(events)

    def of_job(self, job_id: str) -> list[PlatformEvent]:
        with self._lock:
            return [event for event in self.events if event.data.get("jobId") == job_id]


class FakeEndpointValidator:
    """Accepts every endpoint except those it was told to refuse; records what it was asked to validate."""

    def __init__(self) -> None:
        self.refused: dict[str, str] = {}
        self.validated: list[tuple[str, str]] = []
        # Callbacks (no handshake): checked against the refusals too; deliveries recorded and answered `answer`.
        self.checked: list[str] = []
        self.delivered: list[tuple[str, bytes, dict[str, str]]] = []
        self.answer: int | type[Exception] = 202

    def refuse(self, endpoint_url: str, reason: str = "the endpoint did not answer the validation handshake") -> None:
        self.refused[endpoint_url] = reason

    def validate(self, endpoint_url: str, schema: str, *, allow_loopback: bool = False) -> None:
        self.validated.append((endpoint_url, schema))
        if endpoint_url in self.refused:
            raise InvalidInput(self.refused[endpoint_url], code="EndpointValidationFailed")

    def check_callback(self, url: str, *, allow_loopback: bool = False) -> None:
        self.checked.append(url)
        if url in self.refused:
            raise InvalidInput(self.refused[url], code="InvalidEndpoint")

    def deliver_callback(
        self, url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool = False, timeout_seconds: float
    ) -> int:
        self.delivered.append((url, body, dict(headers)))
        if url in self.refused:
            raise InvalidInput(self.refused[url], code="InvalidEndpoint")
        if isinstance(self.answer, int):
            return self.answer
        raise self.answer("the callback did not answer")


class InMemoryEventLog:
    """The EventLog port in memory: newest first, paged by offset."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], PlatformEvent] = {}
        self._lock = threading.Lock()

    def record(self, events: Sequence[PlatformEvent]) -> None:
        with self._lock:
            for event in events:
                self.events[(event.topic, event.id)] = event

    def get_events(self, tenant_id: str, event_ids: Sequence[str]) -> list[PlatformEvent]:
        with self._lock:
            return [self.events[(tenant_id, i)] for i in dict.fromkeys(event_ids) if (tenant_id, i) in self.events]

    def list_events(
        self,
        tenant_id: str,
        *,
        since: str | None = None,
        until: str | None = None,
        event_type: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[PlatformEvent], str | None]:
        with self._lock:
            chosen = [
                e
                for (topic, _), e in self.events.items()
                if topic == tenant_id
                and (since is None or e.event_time >= since)
                and (until is None or e.event_time < until)
                and (event_type is None or e.event_type == event_type)
            ]
        chosen.sort(key=lambda e: (e.event_time, e.id), reverse=True)
        if continuation and not continuation.isdigit():  # a token this log never made (its tokens are offsets)
            raise InvalidInput("continuationToken is not valid", code="InvalidContinuationToken")
        start = int(continuation or 0)
        page = chosen[start : start + limit]
        return page, str(start + limit) if start + limit < len(chosen) else None


class RecordingEventRouting:
    """The EventRouting port as a record of what was asked: routes by (tenant, subscription), redeliveries."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[Subscription, str | None]] = {}
        self.redelivered: list[tuple[str, list[PlatformEvent]]] = []
        self.fail_create: Exception | None = None

    def create_route(self, subscription: Subscription, *, secret: str | None = None) -> None:
        if self.fail_create is not None:
            raise self.fail_create
        self.routes[(subscription.tenant_id, subscription.subscription_id)] = (subscription, secret)

    def delete_route(self, subscription: Subscription) -> None:
        self.routes.pop((subscription.tenant_id, subscription.subscription_id), None)

    def redeliver(self, subscription: Subscription, events: Sequence[PlatformEvent]) -> None:
        self.redelivered.append((subscription.subscription_id, list(events)))


class InMemoryDeadLetterReader:
    """Dead letters a test put there, by subscription id, oldest first."""

    def __init__(self) -> None:
        self.letters: dict[str, list[DeadLetter]] = {}

    def add(self, subscription_id: str, letter: DeadLetter) -> None:
        self.letters.setdefault(subscription_id, []).append(letter)

    def list_dead_letters(
        self, subscription: Subscription, *, limit: int = 100, continuation: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        mine = [
            d for d in self.letters.get(subscription.subscription_id, []) if d.event.topic == subscription.tenant_id
        ]
        start = int(continuation or 0)
        return mine[start : start + limit], str(start + limit) if start + limit < len(mine) else None


class RecordingTrainer:
    """A Trainer that "trains" by handing back the built breast-cancer artifact under a new card, and keeps each call
    (parent, data, version); `fail` makes it raise instead, as a trainer refusing the data does."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.calls: list[tuple[ModelCard, TrainingData, str]] = []
        self.fail = fail

    def train(self, parent: ModelCard, data: TrainingData, *, version: str, started: Any = None) -> TrainedModel:
        self.calls.append((parent, data, version))
        if started is not None:
            started({"fake": {"calls": len(self.calls)}})
        if self.fail is not None:
            raise self.fail
        package = model_package_dir()
        card = {k: v for k, v in parent.raw.items() if k not in ("artifact", "files", "owner", "drift")}
        card["version"] = version
        metrics = {"accuracy": 0.97, "heldOutRows": 36}
        return TrainedModel(
            card={**card, "metrics": metrics}, artifact=(package / "model.onnx").read_bytes(), files={}, metrics=metrics
        )


# Composition


@dataclass
class Fakes:
    """Typed access to the fakes behind a Platform built by make_platform."""

    blobs: InMemoryBlobStore
    tenants: InMemoryTenantStore
    jobs: InMemoryJobStore
    results: InMemoryResultStore
    subscriptions: InMemorySubscriptionStore
    queue: InMemoryJobQueue
    events: InMemoryEventPublisher
    validator: FakeEndpointValidator
    models: BlobModelRegistry
    usage: InMemoryUsageStore


def fakes_of(platform: Platform) -> Fakes:
    return Fakes(
        blobs=platform.blobs,  # type: ignore[arg-type]
        tenants=platform.tenants,  # type: ignore[arg-type]
        jobs=platform.jobs,  # type: ignore[arg-type]
        results=platform.results,  # type: ignore[arg-type]
        subscriptions=platform.subscriptions,  # type: ignore[arg-type]
        queue=platform.queue,  # type: ignore[arg-type]
        events=platform.events,  # type: ignore[arg-type]
        validator=platform.validator,  # type: ignore[arg-type]
        models=platform.models,  # type: ignore[arg-type]
        usage=platform.usage,  # type: ignore[arg-type]
    )


def model_package_dir() -> Path:
    """build/models/breast-cancer-classifier/1, or skip the test when `make models` has not run."""
    package = MODELS_DIR / MODEL_NAME / "1"
    if not (package / "card.json").is_file() or not (package / "model.onnx").is_file():
        pytest.skip(f"{package} is missing: run `make models` to build the model package the unit tests use")
    return package


def make_platform(tmp_path: Path | None = None, **policy: Any) -> Platform:
    """A Platform over the in-memory fakes and the real BlobModelRegistry, with the built package published.

    `tmp_path` is accepted for symmetry with other helpers and not needed: everything lives in memory.
    `policy` overrides Platform fields such as batch_size or max_upload_bytes.
    """
    del tmp_path
    blobs = InMemoryBlobStore()
    registry = BlobModelRegistry(blobs, container="models", secrets=InMemorySecretStore())
    registry.publish_package(model_package_dir())
    jobs = InMemoryJobStore()
    return Platform(
        blobs=blobs,
        tenants=InMemoryTenantStore(),
        jobs=jobs,
        results=InMemoryResultStore(),
        subscriptions=InMemorySubscriptionStore(),
        queue=InMemoryJobQueue(),
        events=InMemoryEventPublisher(),
        models=registry,
        validator=FakeEndpointValidator(),
        identities=InMemoryEntraTenantMap(),
        audit=InMemoryAuditLog(),
        usage=InMemoryUsageStore(jobs),
        event_log=InMemoryEventLog(),
        routing=RecordingEventRouting(),
        dead_letters=InMemoryDeadLetterReader(),
        api_url=API_URL,
        **policy,
    )


def add_tenant(platform: Platform, tenant_id: str = "acme") -> str:
    """Creates the tenant (container and record) through the service; returns its API key."""
    return create_tenant(platform, tenant_id)


def upload(platform: Platform, tenant_id: str, blob_path: str, data: bytes) -> BlobInfo:
    """Writes a blob into the tenant's container, as a tenant's upload would; returns what the event carries."""
    container = container_for(tenant_id)
    platform.blobs.write_bytes(container, blob_path, data)
    return platform.blobs.get_info(container, blob_path)


def sample_bytes(name: str) -> bytes:
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `make models` to build the samples")
    return path.read_bytes()
