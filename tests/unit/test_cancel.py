"""Cancelling a job over the fakes: it stops where it is, ends cancelled with one event, keeps what ran."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.events import DEFAULT_SUBSCRIPTION_EVENT_TYPES, EVENT_TYPES
from shared.domain.jobs import PLAN, Job, JobStatus
from shared.domain.tenants import container_for
from shared.services.cancel import JobAlreadyFinished, cancel_job
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from shared.services.sweeper import sweep
from tests.fakes import MODEL_NAME, add_tenant, fakes_of, make_platform, sample_bytes, upload

CONTAINER = container_for("acme")


def rows(count: int) -> bytes:
    lines = sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)
    return b"".join(lines[i % len(lines)] for i in range(count))


def admit(platform: Platform, data: bytes, name: str = "rows.jsonl") -> Job:
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
    assert job is not None and job.status == JobStatus.QUEUED
    return job


def cancelled_events(platform: Platform, job_id: str) -> list[Any]:
    return [e for e in fakes_of(platform).events.events if e.data.get("jobId") == job_id]


def output_lines(platform: Platform, path: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in platform.blobs.read_bytes(CONTAINER, path).splitlines()]


@pytest.fixture
def sharded() -> Platform:
    """Shards of ~4 KB handed out one at a time: a file of 300 rows is many shards that run one after another."""
    platform = make_platform(shard_bytes=4096, tenant_max_shards_in_flight=1, batch_size=10)
    add_tenant(platform, "acme")
    return platform


def test_a_cancelled_multi_shard_job_keeps_what_ran_and_skips_the_rest(sharded: Platform) -> None:
    job = admit(sharded, rows(300))
    queue = fakes_of(sharded).queue
    (plan,) = queue.drain()
    assert plan.kind == PLAN
    run_shard(sharded, plan)
    planned = sharded.jobs.get_job("acme", job.job_id)
    assert planned.shard_count > 3
    (first,) = queue.drain()
    run_shard(sharded, first)  # shard 0 ran; shard 1 is now in the queue
    ran = sharded.jobs.get_job("acme", job.job_id).counts.records
    assert 0 < ran < 300

    answer = cancel_job(sharded, "acme", job.job_id)
    assert answer.status == JobStatus.RUNNING and answer.cancel_requested_at  # shard 1 is still in flight
    assert cancelled_events(sharded, job.job_id) == []
    for message in queue.drain():  # the queued shard reaches a worker: it is skipped, and the job ends
        run_shard(sharded, message)
    assert queue.drain() == []  # nothing more was handed out

    ended = sharded.jobs.get_job("acme", job.job_id)
    assert ended.status == JobStatus.CANCELLED and ended.terminal
    assert ended.counts.records == ran  # the skipped shards never ran
    assert ended.shards_done == [0] and ended.shards_skipped == [1]
    assert ended.error is not None and ended.error["code"] == "Cancelled"
    (event,) = cancelled_events(sharded, job.job_id)
    assert event.event_type == "AIaaS.Job.Cancelled"
    assert event.data["status"] == "cancelled" and event.data["counts"]["records"] == ran
    # What ran is in the outputs and in the results; metering counts it.
    assert len(output_lines(sharded, ended.outputs["results"])) == ended.counts.succeeded
    items = [i for p in sharded.results.iter_pages("acme", job.job_id) for i in p.items]
    assert len(items) == ended.counts.succeeded
    (usage,) = fakes_of(sharded).usage.list_usage("acme", ended_from="", ended_before="9999")
    assert usage.records == ran

    # Again: the job as it is, never a second event; a redelivered shard changes nothing.
    assert cancel_job(sharded, "acme", job.job_id).status == JobStatus.CANCELLED
    run_shard(sharded, first)
    assert len(cancelled_events(sharded, job.job_id)) == 1


def test_a_job_with_nothing_in_flight_ends_cancelled_at_once(sharded: Platform) -> None:
    job = admit(sharded, rows(300))  # only its plan message is queued: no shard runs yet
    ended = cancel_job(sharded, "acme", job.job_id)
    assert ended.status == JobStatus.CANCELLED
    assert ended.counts.records == 0
    for message in fakes_of(sharded).queue.drain():  # the plan reaches a worker afterwards: it plans nothing
        run_shard(sharded, message)
    ended = sharded.jobs.get_job("acme", job.job_id)
    assert ended.status == JobStatus.CANCELLED and ended.shard_count == 0
    assert [e.event_type for e in cancelled_events(sharded, job.job_id)] == ["AIaaS.Job.Cancelled"]


def test_a_running_shard_stops_at_its_next_batch() -> None:
    """The heartbeat that reads the job sees the cancel; the shard checks its flag between batches."""
    platform = make_platform(batch_size=10, cancel_poll_seconds=0.01)
    add_tenant(platform, "acme")
    job = admit(platform, rows(50))  # one shard of five batches
    real_load = platform.models.load
    calls: list[int] = []

    class CancellingPredictor:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def predict(self, batch: list[Any]) -> list[Any]:
            calls.append(len(batch))
            if len(calls) == 1:  # the tenant cancels while the first batch is scored
                cancel_job(platform, "acme", job.job_id)
                beat = next(t for t in threading.enumerate() if t.name == "shard-heartbeat")
                beat.join(timeout=30)  # it ends once it has seen the cancel
                assert not beat.is_alive()
            return list(self._inner.predict(batch))

    platform.models.load = lambda card: CancellingPredictor(real_load(card))  # type: ignore[method-assign]
    for message in fakes_of(platform).queue.drain():
        run_shard(platform, message)
    ended = platform.jobs.get_job("acme", job.job_id)
    assert calls == [10]
    assert ended.status == JobStatus.CANCELLED
    assert ended.counts.records == 10
    assert len(output_lines(platform, ended.outputs["results"])) == ended.counts.succeeded
    assert len(cancelled_events(platform, job.job_id)) == 1


def test_a_finished_job_cannot_be_cancelled(sharded: Platform) -> None:
    job = admit(sharded, rows(5))
    for message in fakes_of(sharded).queue.drain():
        run_shard(sharded, message)
    with pytest.raises(JobAlreadyFinished) as err:
        cancel_job(sharded, "acme", job.job_id)
    assert err.value.code == "JobAlreadyFinished" and "succeeded" in err.value.message
    assert sharded.jobs.get_job("acme", job.job_id).status == JobStatus.SUCCEEDED


def test_the_sweeper_ends_a_cancelled_job_whose_shard_message_was_lost(sharded: Platform) -> None:
    job = admit(sharded, rows(300))
    queue = fakes_of(sharded).queue
    for message in queue.drain():
        run_shard(sharded, message)  # the plan: shard 0 is handed out
    assert cancel_job(sharded, "acme", job.job_id).status == JobStatus.QUEUED  # shard 0 is in the queue
    queue.drain()  # shard 0's message is lost
    from datetime import timedelta

    sweep(sharded, stalled_after=timedelta(seconds=-1), max_sweeps=5)  # re-drives shard 0, which is skipped
    for message in queue.drain():
        run_shard(sharded, message)
    ended = sharded.jobs.get_job("acme", job.job_id)
    assert ended.status == JobStatus.CANCELLED and ended.counts.records == 0
    assert len(cancelled_events(sharded, job.job_id)) == 1
    sweep(sharded, stalled_after=timedelta(seconds=-1), max_sweeps=5)  # cancelled is terminal: nothing more
    assert len(cancelled_events(sharded, job.job_id)) == 1


def test_cancelled_is_a_job_event_every_subscription_gets_by_default() -> None:
    assert "AIaaS.Job.Cancelled" in EVENT_TYPES
    assert "AIaaS.Job.Cancelled" in DEFAULT_SUBSCRIPTION_EVENT_TYPES


def test_the_cancel_route(sharded: Platform) -> None:
    client = TestClient(create_app(lambda: sharded), raise_server_exceptions=False)
    key = add_tenant(sharded, "globex")
    acme = {"Authorization": f"Bearer {_admin_key(sharded)}"}
    job = admit(sharded, rows(300))
    url = f"/api/v1/jobs/{job.job_id}/cancel"
    assert client.post(url, headers={"Authorization": f"Bearer {key}"}).status_code == 404  # another tenant's
    first = client.post(url, headers=acme)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "cancelled" and first.json()["jobId"] == job.job_id
    again = client.post(url, headers=acme)
    assert again.status_code == 202 and again.json()["status"] == "cancelled"
    assert len(cancelled_events(sharded, job.job_id)) == 1
    assert client.post("/api/v1/jobs/nothing/cancel", headers=acme).status_code == 404

    done = admit(sharded, rows(5), name="small.jsonl")
    for message in fakes_of(sharded).queue.drain():
        run_shard(sharded, message)
    refused = client.post(f"/api/v1/jobs/{done.job_id}/cancel", headers=acme)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "JobAlreadyFinished"


def _admin_key(platform: Platform) -> str:
    from shared.domain.tenants import ADMIN
    from shared.services.tenants import create_key

    return create_key(platform, "acme", "tests", ADMIN)[1]
