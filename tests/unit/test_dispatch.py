"""Fair dispatch over the fakes: a job's shards run in parallel, tenants share the fleet, limits hold, crashes heal."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import orjson
import pytest

from shared.domain.jobs import Job, JobStatus, ShardMessage
from shared.ports import JobBacklog
from shared.services.dispatch import dispatch, plan_grants
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import ShardOutcome, heartbeat, record_shard, run_shard
from shared.services.sweeper import sweep
from tests.fakes import MODEL_NAME, InMemoryJobQueue, add_tenant, fakes_of, make_platform, sample_bytes, upload

# A stall time in the future's favour: every job counts as idle, however recently it was written.
EVERY_JOB_IDLE = timedelta(seconds=-1)


def rows_file(count: int, prefix: str = "r") -> bytes:
    rows = [orjson.loads(line) for line in sample_bytes("breast-cancer.jsonl").splitlines() if line.strip()]
    return b"".join(orjson.dumps({**rows[i % len(rows)], "id": f"{prefix}-{i}"}) + b"\n" for i in range(count))


def submit(platform: Platform, tenant: str, name: str, data: bytes) -> Job:
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, tenant, path, upload(platform, tenant, path, data))
    assert job is not None and job.status == JobStatus.QUEUED
    return job


def in_flight(platform: Platform, tenant: str | None = None) -> int:
    return sum(e.in_flight for e in platform.jobs.list_schedulable() if tenant is None or e.tenant_id == tenant)


def work_one(platform: Platform) -> ShardMessage | None:
    """One worker step: the oldest message in the queue (FIFO, as the queues deliver), run to the end."""
    queue: InMemoryJobQueue = platform.queue  # type: ignore[assignment]
    with queue._lock:
        message = queue.messages.pop(0) if queue.messages else None
    if message is not None:
        run_shard(platform, message)
    return message


def test_a_tenant_alone_runs_one_jobs_shards_in_parallel_up_to_its_limit() -> None:
    platform = make_platform(shard_bytes=4096, tenant_max_shards_in_flight=3)
    add_tenant(platform, "acme")
    job = submit(platform, "acme", "big.jsonl", rows_file(120))
    [plan] = platform.queue.drain()  # type: ignore[attr-defined]
    run_shard(platform, plan)
    planned = platform.jobs.get_job("acme", job.job_id)
    assert planned.shard_count >= 8

    queued = platform.queue.messages  # type: ignore[attr-defined]
    assert [(m.job_id, m.shard_index) for m in queued] == [(job.job_id, 0), (job.job_id, 1), (job.job_id, 2)]
    most = 0
    while work_one(platform):
        most = max(most, in_flight(platform, "acme"))
        assert in_flight(platform, "acme") <= 3
    assert most == 3  # the job's shards kept the whole tenant limit busy
    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED and done.counts.records == 120


def test_a_small_tenant_is_served_at_the_next_dispatch_while_a_big_tenant_has_twenty_jobs_waiting() -> None:
    # The fleet (global limit) is full of tenant A's work: B's job cannot start until a slot frees up.
    platform = make_platform(tenant_max_shards_in_flight=2, max_shards_in_flight=2)
    add_tenant(platform, "big")
    add_tenant(platform, "small")
    fakes = fakes_of(platform)
    big_jobs = [submit(platform, "big", f"a{i:02d}.jsonl", rows_file(5, f"a{i}")) for i in range(20)]
    assert in_flight(platform, "big") == 2 and len(fakes.queue.messages) == 2
    small = submit(platform, "small", "b.jsonl", rows_file(5, "b"))
    assert len(fakes.queue.messages) == 2  # no slot free: B's shard waits in its backlog

    work_one(platform)  # one of A's shards ends: the freed slot is B's, not A's third job's
    assert fakes.queue.messages[-1].job_id == small.job_id

    while work_one(platform):
        pass
    finished = [event.data["jobId"] for event in fakes.events.events]
    assert len(finished) == 21
    assert finished.index(small.job_id) <= 2  # behind at most the shards that held the fleet when it came
    assert all(platform.jobs.get_job("big", j.job_id).status == JobStatus.SUCCEEDED for j in big_jobs)


def test_a_newcomer_waits_behind_at_most_the_big_tenants_limit_when_the_fleet_has_room() -> None:
    platform = make_platform(tenant_max_shards_in_flight=2, max_shards_in_flight=100)
    add_tenant(platform, "big")
    add_tenant(platform, "small")
    fakes = fakes_of(platform)
    for i in range(20):
        submit(platform, "big", f"a{i:02d}.jsonl", rows_file(5, f"a{i}"))
    small = submit(platform, "small", "b.jsonl", rows_file(5, "b"))

    assert [m.job_id for m in fakes.queue.messages].index(small.job_id) == 2  # granted at once, third in line


def test_plan_grants_gives_the_least_loaded_tenant_each_next_slot() -> None:
    def entry(tenant: str, job: str, count: int, dispatched: int = 0, done: int = 0) -> JobBacklog:
        return JobBacklog(tenant, job, f"2024-01-01T00:00:0{job[-1]}Z", count, dispatched, done)

    backlog = [
        entry("a", "a1", 10, dispatched=2),  # two in flight already
        entry("a", "a2", 5),
        entry("b", "b1", 1),
        entry("c", "c1", 3),
    ]

    grants = plan_grants(backlog, tenant_limit=4, global_limit=8)

    assert [g.tenant_id for g in grants[:2]] == ["b", "c"]  # the idle tenants first
    assert Counter(g.tenant_id for g in grants) == {"a": 2, "b": 1, "c": 3}  # 8 - 2 in flight = 6 slots
    assert [g.job_id for g in grants if g.tenant_id == "a"] == ["a1", "a1"]  # the oldest job's shards first
    assert plan_grants(backlog, tenant_limit=2, global_limit=100) == [backlog[2], backlog[3], backlog[3]]


def test_the_tenant_limit_holds_with_many_dispatchers_and_workers_at_once() -> None:
    limit = 3
    platform = make_platform(tenant_max_shards_in_flight=limit, max_shards_in_flight=1000)
    add_tenant(platform, "acme")
    fakes = fakes_of(platform)
    for k in range(4):
        created = Job("acme", f"job-{k}", MODEL_NAME, "1", f"p{k}", "e", created_at=f"2024-01-01T00:00:0{k}.000Z")
        created.shard_plan = [[i, i + 1, i, i + 1] for i in range(12)]
        created.shard_count = 12
        assert platform.jobs.create_job(created)
    fakes.jobs.read_delay = 0.002  # widens every read-modify-write window, so the races really happen
    worst = 0
    real_replace = fakes.jobs.replace_job

    def replace_and_measure(job: Job) -> Job:
        nonlocal worst
        stored = real_replace(job)
        worst = max(worst, in_flight(platform, "acme"))
        return stored

    fakes.jobs.replace_job = replace_and_measure  # type: ignore[method-assign]
    stop = threading.Event()
    errors: list[BaseException] = []

    def dispatcher() -> None:
        while not stop.is_set():
            dispatch(platform)

    def worker() -> None:
        while not stop.is_set():
            with fakes.queue._lock:
                message = fakes.queue.messages.pop(0) if fakes.queue.messages else None
            if message is None:
                time.sleep(0.001)
                continue
            try:
                record_shard(platform, "acme", message.job_id, message.shard_index, ShardOutcome())
            except BaseException as err:  # surfaced below
                errors.append(err)

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    threads += [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(platform.jobs.get_job("acme", f"job-{k}").terminal for k in range(4)):
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()

    assert not errors
    assert all(platform.jobs.get_job("acme", f"job-{k}").terminal for k in range(4))
    assert all(sorted(platform.jobs.get_job("acme", f"job-{k}").shards_done) == list(range(12)) for k in range(4))
    assert worst == limit


class FailingOnceQueue(InMemoryJobQueue):
    """The queue is unreachable for one send: as if the dispatcher died between its grant and the enqueue."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def enqueue(self, messages: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("queue unreachable")
        super().enqueue(messages)


def test_a_crash_between_the_grant_and_the_enqueue_is_recovered_by_the_sweeper() -> None:
    platform = make_platform()
    platform.queue = FailingOnceQueue()
    add_tenant(platform, "acme")
    path = f"inbox/{MODEL_NAME}/rows.jsonl"
    with pytest.raises(ConnectionError):
        admit_blob_created(platform, "acme", path, upload(platform, "acme", path, rows_file(10)))
    [job] = platform.jobs.list_schedulable()
    assert (job.dispatched, job.in_flight) == (1, 1)
    assert platform.queue.messages == []  # type: ignore[attr-defined]
    dispatch(platform)
    assert platform.queue.messages == []  # type: ignore[attr-defined]  # handed out already: not the dispatcher's

    report = sweep(platform, stalled_after=EVERY_JOB_IDLE, max_sweeps=3)

    assert report.requeued == 1
    while work_one(platform):
        pass
    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED and done.counts.records == 10 and done.sweeps == 1


def test_the_sweeper_re_drives_a_stalled_shard_but_leaves_jobs_waiting_for_their_turn_alone() -> None:
    platform = make_platform(tenant_max_shards_in_flight=1)
    add_tenant(platform, "acme")
    fakes = fakes_of(platform)
    stalled, *waiting = [submit(platform, "acme", f"f{i}.jsonl", rows_file(5, f"f{i}")) for i in range(3)]
    assert [m.job_id for m in fakes.queue.drain()] == [stalled.job_id]  # its worker then dies, silently

    for _ in range(5):
        report = sweep(platform, stalled_after=EVERY_JOB_IDLE, max_sweeps=1000)
        assert report.requeued == 1  # the lost shard only, every pass
        assert [m.job_id for m in fakes.queue.drain()] == [stalled.job_id]  # and lost again

    assert platform.jobs.get_job("acme", stalled.job_id).sweeps == 5
    for job in waiting:  # never taken for stalled (a give-up would fail them), and still waiting their turn
        stored = platform.jobs.get_job("acme", job.job_id)
        assert (stored.status, stored.sweeps, stored.dispatched) == (JobStatus.QUEUED, 0, 0)
    sweep(platform, stalled_after=EVERY_JOB_IDLE, max_sweeps=1000)
    while work_one(platform):  # this time the re-driven shard runs: the others follow
        pass
    assert all(platform.jobs.get_job("acme", j.job_id).status == JobStatus.SUCCEEDED for j in [stalled, *waiting])


def test_a_running_shard_keeps_its_job_alive_for_the_sweeper() -> None:
    platform = make_platform(heartbeat_seconds=0.01)
    add_tenant(platform, "acme")
    job = submit(platform, "acme", "rows.jsonl", rows_file(5))
    platform.queue.drain()  # type: ignore[attr-defined]  # a worker took the message and is running it
    stored = platform.jobs.get_job("acme", job.job_id)
    stored.updated_at = "2020-01-01T00:00:00.000Z"  # idle far longer than the stall time, by its document
    platform.jobs.replace_job(stored)

    with heartbeat(platform, "acme", job.job_id):
        deadline = time.monotonic() + 10
        while platform.jobs.get_job("acme", job.job_id).updated_at.startswith("2020") and time.monotonic() < deadline:
            time.sleep(0.01)
        report = sweep(platform, stalled_after=timedelta(minutes=10), max_sweeps=3)

    assert report.requeued == 0 and platform.queue.messages == []  # type: ignore[attr-defined]
    assert platform.jobs.get_job("acme", job.job_id).sweeps == 0


def test_a_job_that_makes_progress_between_re_drives_is_never_given_up() -> None:
    """A long job whose queued shards now and then look stalled (a busy queue) is re-driven, not failed."""
    platform = make_platform()
    add_tenant(platform, "acme")
    job = Job("acme", "long-job", MODEL_NAME, "1", "p", "e", shard_count=4, dispatched=4)
    job.shard_plan = [[i, i + 1, i, i + 1] for i in range(4)]
    assert platform.jobs.create_job(job)

    for index in range(3):  # two fruitless re-drives (max_sweeps), then a shard ends: the count starts over
        for _ in range(2):
            report = sweep(platform, stalled_after=EVERY_JOB_IDLE, max_sweeps=2)
            assert (report.requeued, report.failed) == (1, 0)
        record_shard(platform, "acme", "long-job", index, ShardOutcome())

    stored = platform.jobs.get_job("acme", "long-job")
    assert not stored.terminal and (stored.sweeps, stored.idle_sweeps) == (6, 0)
    sweep(platform, stalled_after=EVERY_JOB_IDLE, max_sweeps=2)
    sweep(platform, stalled_after=EVERY_JOB_IDLE, max_sweeps=2)
    assert sweep(platform, stalled_after=EVERY_JOB_IDLE, max_sweeps=2).failed == 1  # now it really stalled
