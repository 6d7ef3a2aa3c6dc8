"""What the dispatcher needs of the stand-ins: its backlog query on Cosmos, a session-free FIFO queue on Azurite."""

from __future__ import annotations

import uuid

import orjson
import pytest

from shared.adapters.cosmos import CosmosJobStore, ensure_schema
from shared.adapters.cosmos_client import make_cosmos_client
from shared.adapters.storage_queue import StorageQueueJobQueue
from shared.domain.jobs import Job, JobStatus, ShardMessage
from shared.localhost.emulators import Azurite, CosmosServer
from shared.ports import JobBacklog

pytestmark = pytest.mark.integration


def _job(tenant: str, job_id: str, *, count: int, dispatched: int, done: list[int], status: JobStatus) -> Job:
    job = Job(tenant, job_id, "m", "1", f"inbox/m/{job_id}.jsonl", "0x1", status=status, created_at=f"2026-{job_id}")
    job.shard_count, job.dispatched, job.shards_done = count, dispatched, done
    job.shard_plan = [[i, i + 1, i, i + 1] for i in range(count)]
    return job


def test_the_backlog_query_returns_every_tenants_schedulable_jobs_with_their_counts(cosmos: CosmosServer) -> None:
    store = CosmosJobStore(ensure_schema(make_cosmos_client(cosmos.endpoint, cosmos.key), f"db{uuid.uuid4().hex[:8]}"))
    jobs = [
        _job("ta", "01-waiting", count=4, dispatched=2, done=[0], status=JobStatus.RUNNING),
        _job("ta", "02-in-flight", count=2, dispatched=2, done=[1], status=JobStatus.RUNNING),
        _job("tb", "03-queued", count=1, dispatched=0, done=[], status=JobStatus.QUEUED),
        _job("tb", "04-planning", count=0, dispatched=0, done=[], status=JobStatus.QUEUED),
        _job("tc", "05-ended", count=3, dispatched=3, done=[0, 1, 2], status=JobStatus.SUCCEEDED),
        _job("tc", "06-all-done", count=2, dispatched=2, done=[0, 1], status=JobStatus.RUNNING),  # finalising
    ]
    for job in jobs:
        assert store.create_job(job)

    backlog = sorted(store.list_schedulable(), key=lambda e: e.job_id)

    assert backlog == [
        JobBacklog("ta", "01-waiting", "2026-01-waiting", 4, 2, 1),
        JobBacklog("ta", "02-in-flight", "2026-02-in-flight", 2, 2, 1),
        JobBacklog("tb", "03-queued", "2026-03-queued", 1, 0, 0),
    ]
    assert [(e.waiting, e.in_flight) for e in backlog] == [(2, 1), (0, 1), (1, 0)]

    ended = store.get_job("ta", "02-in-flight")  # its last shard is recorded: it leaves the backlog
    ended.shards_done.append(0)
    store.replace_job(ended)
    assert {e.job_id for e in store.list_schedulable()} == {"01-waiting", "03-queued"}


def test_the_local_queue_is_first_in_first_out_and_carries_no_session(azurite: Azurite) -> None:
    queue = StorageQueueJobQueue(azurite.connection_string, f"q{uuid.uuid4().hex[:8]}", visibility_seconds=30)
    sent = [ShardMessage("big", "job-a", i, 3, i * 10, (i + 1) * 10, i, i + 1) for i in range(3)]
    sent.insert(1, ShardMessage("small", "job-b", 0, 1))

    queue.enqueue(sent)
    received = [queue.receive(max_messages=1)[0] for _ in sent]

    assert [r.message for r in received] == sent  # the dispatcher's fair order is the order workers see
    assert all("sessionId" not in orjson.loads(r.body) for r in received)
    assert [orjson.loads(r.body)["messageId"] for r in received] == [m.message_id for m in sent]
