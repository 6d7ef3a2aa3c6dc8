"""The adapters against the real stand-ins: Blob and Queue on Azurite, the stores on the Cosmos stand-in."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from shared.adapters.azure_blob import AzureBlobStore
from shared.adapters.cosmos import (
    CosmosJobStore,
    CosmosResultStore,
    CosmosSubscriptionStore,
    CosmosTenantStore,
    ensure_schema,
)
from shared.adapters.cosmos_client import make_cosmos_client
from shared.adapters.storage_queue import StorageQueueJobQueue
from shared.domain.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.domain.events import Subscription
from shared.domain.jobs import Job, JobStatus, ResultPage, ShardMessage
from shared.domain.tenants import ApiKey, Tenant
from shared.localhost.emulators import Azurite, CosmosServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def blobs(azurite: Azurite) -> AzureBlobStore:
    return AzureBlobStore.from_connection_string(azurite.connection_string)


@pytest.fixture(scope="module")
def db(cosmos: CosmosServer):  # type: ignore[no-untyped-def]
    client = make_cosmos_client(cosmos.endpoint, cosmos.key)
    return ensure_schema(client, f"db{uuid.uuid4().hex[:8]}")


def _job(tenant: str, job_id: str | None = None, created_at: str = "2026-01-01T00:00:00.000Z") -> Job:
    return Job(
        tenant_id=tenant,
        job_id=job_id or uuid.uuid4().hex,
        model_name="m",
        model_version="1",
        blob_path="inbox/m/x.jsonl",
        etag="0x1",
        created_at=created_at,
    )


# Blob
def test_blob_range_reads_stream_the_requested_bytes(blobs: AzureBlobStore) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB: several download chunks
    blobs.write_bytes("it-blob", "big.bin", data)
    assert b"".join(blobs.iter_chunks("it-blob", "big.bin")) == data
    assert b"".join(blobs.iter_chunks("it-blob", "big.bin", start=1000, end=5_000_123)) == data[1000:5_000_123]


def test_blob_read_with_stale_etag_is_refused(blobs: AzureBlobStore) -> None:
    etag = blobs.write_bytes("it-blob", "changing.txt", b"one")
    assert blobs.get_info("it-blob", "changing.txt").etag == etag
    blobs.write_bytes("it-blob", "changing.txt", b"two")
    with pytest.raises(PreconditionFailed):
        b"".join(blobs.iter_chunks("it-blob", "changing.txt", etag=etag))


def test_blob_missing_is_not_found(blobs: AzureBlobStore) -> None:
    with pytest.raises(NotFound):
        blobs.get_info("it-blob", "nothing-here")
    with pytest.raises(NotFound):
        blobs.read_bytes("no-such-container", "x")


def test_write_chunks_streams_a_large_blob(blobs: AzureBlobStore) -> None:
    chunks = [bytes([i]) * (1024 * 1024) for i in range(70)]  # 70 MB: over the single-put size
    blobs.write_chunks("it-blob", "streamed.bin", iter(chunks))
    info = blobs.get_info("it-blob", "streamed.bin")
    assert info.size == 70 * 1024 * 1024
    assert b"".join(blobs.iter_chunks("it-blob", "streamed.bin", start=69 * 1024 * 1024)) == chunks[69]


def test_upload_url_creates_that_blob_only(blobs: AzureBlobStore) -> None:
    blobs.ensure_container("tenant-sas")
    url = blobs.upload_url("tenant-sas", "inbox/m/up/file.jsonl", expires_in=timedelta(minutes=5))
    BlobClient.from_blob_url(url).upload_blob(b'{"a": 1}\n')
    assert blobs.read_bytes("tenant-sas", "inbox/m/up/file.jsonl") == b'{"a": 1}\n'
    # The same signature neither reads the blob nor writes anywhere else.
    with pytest.raises(HttpResponseError):
        BlobClient.from_blob_url(url).download_blob().readall()
    other = url.replace("inbox/m/up/file.jsonl", "inbox/m/up/other.jsonl")
    with pytest.raises(HttpResponseError):
        BlobClient.from_blob_url(other).upload_blob(b"x")
    put = httpx.put(url, content=b"raw", headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201


# Queue
def test_queue_redelivers_abandoned_messages_and_counts_deliveries(azurite: Azurite) -> None:
    queue = StorageQueueJobQueue(azurite.connection_string, f"q{uuid.uuid4().hex[:8]}", visibility_seconds=30)
    queue.enqueue([ShardMessage("acme", "job1", 0, 2), ShardMessage("acme", "job1", 1, 2)])
    first = queue.receive(max_messages=1)[0]
    assert first.message is not None and first.delivery_count == 1
    queue.abandon(first)
    seen = {}
    for _ in range(3):
        for received in queue.receive(max_messages=2):
            assert received.message is not None
            seen[received.message.shard_index] = received
    assert set(seen) == {0, 1}
    assert max(r.delivery_count for r in seen.values()) == 2
    queue.dead_letter(seen[first.message.shard_index], "gave up")
    queue.complete(seen[1 - first.message.shard_index])
    assert queue.receive(max_messages=5) == []
    poison = queue.poison_messages()
    assert poison[0]["reason"] == "gave up" and '"jobId":"job1"' in poison[0]["body"]


# Cosmos
def test_tenants_create_once_and_read(db) -> None:  # type: ignore[no-untyped-def]
    store = CosmosTenantStore(db)
    key = ApiKey("0" * 32, "initial", "AIaaS.Admin", "h", "t")
    store.create_tenant(Tenant("acme", created_at="t", keys=[key]))
    with pytest.raises(AlreadyExists):
        store.create_tenant(Tenant("acme"))
    assert store.get_tenant("acme").keys == [key]
    with pytest.raises(NotFound):
        store.get_tenant("nobody")


def test_jobs_are_created_once_and_replaced_only_with_the_current_etag(db) -> None:  # type: ignore[no-untyped-def]
    store = CosmosJobStore(db)
    job = _job("acme")
    assert store.create_job(job) is True
    assert store.create_job(_job("acme", job.job_id)) is False
    first = store.get_job("acme", job.job_id)
    second = store.get_job("acme", job.job_id)
    first.status = JobStatus.RUNNING
    store.replace_job(first)
    second.status = JobStatus.FAILED
    with pytest.raises(PreconditionFailed):
        store.replace_job(second)
    assert store.get_job("acme", job.job_id).status == JobStatus.RUNNING
    with pytest.raises(NotFound):
        store.get_job("other", job.job_id)


def test_jobs_list_newest_first_in_pages(db) -> None:  # type: ignore[no-untyped-def]
    store = CosmosJobStore(db)
    tenant = f"t{uuid.uuid4().hex[:6]}"
    # Two jobs share a timestamp: paging must neither skip nor repeat them.
    stamps = [
        "2026-01-01T00:00:01.000Z",
        "2026-01-01T00:00:02.000Z",
        "2026-01-01T00:00:02.000Z",
        "2026-01-01T00:00:03.000Z",
        "2026-01-01T00:00:04.000Z",
    ]
    for stamp in stamps:
        store.create_job(_job(tenant, created_at=stamp))
    store.create_job(_job("someone-else"))
    seen: list[Job] = []
    token = None
    while True:
        page, token = store.list_jobs(tenant, limit=2, continuation=token)
        seen += page
        if token is None:
            break
    assert [j.created_at for j in seen] == sorted(stamps, reverse=True)
    assert len({j.job_id for j in seen}) == len(stamps)


def test_result_pages_come_back_in_record_order_from_a_record(db) -> None:  # type: ignore[no-untyped-def]
    store = CosmosResultStore(db)

    def page(first: int) -> ResultPage:
        items = [{"recordIndex": i, "id": None, "output": {"v": i}} for i in range(first, first + 10)]
        return ResultPage("acme", "jobA", 0, first, first + 9, items, [])

    for first in (20, 0, 10):
        store.put_page(page(first))
    store.put_page(page(10))  # a redelivered shard overwrites its page
    store.put_page(ResultPage("acme", "jobB", 0, 0, 9, [{"recordIndex": 0}], []))
    pages = list(store.iter_pages("acme", "jobA"))
    assert [p.first_record_index for p in pages] == [0, 10, 20]
    assert [p.first_record_index for p in store.iter_pages("acme", "jobA", from_record=15)] == [10, 20]
    assert list(store.iter_pages("other", "jobA")) == []


def test_subscriptions_are_per_tenant(db) -> None:  # type: ignore[no-untyped-def]
    store = CosmosSubscriptionStore(db)
    sub = Subscription("acme", "s1", "https://example.org/hook")
    store.put_subscription(sub)
    assert [s.subscription_id for s in store.list_subscriptions("acme")] == ["s1"]
    assert store.list_subscriptions("globex") == []
    with pytest.raises(NotFound):
        store.get_subscription("globex", "s1")
    store.delete_subscription("acme", "s1")
    store.delete_subscription("acme", "s1")  # already gone is fine
    assert store.list_subscriptions("acme") == []
