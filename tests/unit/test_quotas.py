"""Quotas over the fakes: admission refuses what is over a tenant's limits, once, before any record is read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.errors import InvalidInput, NotFound, QuotaExceeded, RateLimited
from shared.domain.jobs import Job, JobStatus
from shared.domain.usage import Quota, TenantActivity, rate_window
from shared.services.ingest import admit_blob_created, submit_job
from shared.services.platform import Platform
from shared.services.quotas import check_request_rate, quota_of, set_quota
from shared.services.shards import run_shard
from tests.fakes import MODEL_NAME, Fakes, add_tenant, sample_bytes, upload


def rows(count: int) -> bytes:
    return b"".join(sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)[:count])


def arrive(platform: Platform, name: str, data: bytes, tenant_id: str = "acme") -> Job:
    """An upload's BlobCreated event, admitted (its shards left in the queue: the job stays unfinished)."""
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, tenant_id, path, upload(platform, tenant_id, path, data))
    assert job is not None
    return job


def run_queued(platform: Platform) -> None:
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        run_shard(platform, message)


def rejected_events(fakes: Fakes, job: Job) -> list[dict[str, str]]:
    return [e.data["error"] for e in fakes.events.of_job(job.job_id) if e.event_type == "AIaaS.Job.Rejected"]


def test_an_upload_over_the_concurrent_jobs_limit_is_rejected_once_naming_the_limit(
    platform: Platform, fakes: Fakes
) -> None:
    set_quota(platform, "acme", concurrentJobs=2)
    first, second = arrive(platform, "a.jsonl", rows(3)), arrive(platform, "b.jsonl", rows(3))
    reads_before = fakes.results.puts

    third = arrive(platform, "c.jsonl", rows(3))

    assert first.status == second.status == JobStatus.QUEUED
    assert third.status == JobStatus.REJECTED
    assert rejected_events(fakes, third) == [
        {"code": "QuotaExceeded", "message": "the tenant's limit of 2 concurrent jobs is reached"}
    ]
    assert fakes.results.puts == reads_before  # nothing of it was run
    path = f"inbox/{MODEL_NAME}/c.jsonl"
    replayed = admit_blob_created(platform, "acme", path, platform.blobs.get_info("tenant-acme", path))
    assert replayed is not None and replayed.job_id == third.job_id
    assert len(fakes.events.of_job(third.job_id)) == 1


def test_a_replayed_event_of_an_admitted_job_is_not_taken_for_a_new_one_at_the_limit(
    platform: Platform, fakes: Fakes
) -> None:
    set_quota(platform, "acme", concurrentJobs=1)
    job = arrive(platform, "a.jsonl", rows(3))
    path = f"inbox/{MODEL_NAME}/a.jsonl"

    replayed = admit_blob_created(platform, "acme", path, platform.blobs.get_info("tenant-acme", path))

    assert replayed is not None and replayed.job_id == job.job_id and replayed.status == JobStatus.QUEUED
    assert fakes.events.of_job(job.job_id) == []


def test_of_two_admissions_racing_for_the_last_slot_the_later_job_is_rejected(
    platform: Platform, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance admitted a job between this admission's check and its create: both passed the check."""
    set_quota(platform, "acme", concurrentJobs=1)
    real_activity = fakes.usage.activity
    calls = 0

    def first_look_is_stale(tenant_id: str) -> TenantActivity:
        nonlocal calls
        calls += 1
        return TenantActivity() if calls == 1 else real_activity(tenant_id)  # before the other job was stored

    other = arrive(platform, "other.jsonl", rows(3))
    monkeypatch.setattr(fakes.usage, "activity", first_look_is_stale)

    late = arrive(platform, "late.jsonl", rows(3))

    assert platform.jobs.get_job("acme", other.job_id).status == JobStatus.QUEUED
    assert late.status == JobStatus.REJECTED
    assert rejected_events(fakes, late) == [
        {"code": "QuotaExceeded", "message": "the tenant's limit of 1 concurrent jobs is reached"}
    ]
    assert all(message.job_id != late.job_id for message in fakes.queue.messages)
    calls = 0
    upload(platform, "acme", "data/c.jsonl", rows(2))
    with pytest.raises(QuotaExceeded):  # POST /api/v1/jobs: the caller gets the 429
        submit_job(platform, "acme", MODEL_NAME, "data/c.jsonl")


def test_a_finished_job_frees_its_slot(platform: Platform) -> None:
    set_quota(platform, "acme", concurrentJobs=1)
    arrive(platform, "a.jsonl", rows(3))
    run_queued(platform)

    assert arrive(platform, "b.jsonl", rows(3)).status == JobStatus.QUEUED


def test_a_file_over_the_tenants_size_limit_is_rejected_naming_it(platform: Platform, fakes: Fakes) -> None:
    data = rows(10)
    set_quota(platform, "acme", maxFileBytes=len(data) - 1)

    job = arrive(platform, "big.jsonl", data)

    assert job.status == JobStatus.REJECTED
    [error] = rejected_events(fakes, job)
    assert error["code"] == "QuotaExceeded"
    assert f"limit of {len(data) - 1} bytes per file" in error["message"]
    assert arrive(platform, "small.jsonl", rows(1)).status == JobStatus.QUEUED


def test_uploads_stop_at_the_records_per_day_limit(platform: Platform, fakes: Fakes) -> None:
    set_quota(platform, "acme", recordsPerDay=5)
    arrive(platform, "a.jsonl", rows(5))
    run_queued(platform)

    job = arrive(platform, "b.jsonl", rows(1))

    assert job.status == JobStatus.REJECTED
    [error] = rejected_events(fakes, job)
    assert error["code"] == "QuotaExceeded" and "limit of 5 records per day" in error["message"]
    # Another tenant has its own day.
    add_tenant(platform, "globex")
    assert arrive(platform, "b.jsonl", rows(1), "globex").status == JobStatus.QUEUED


def test_records_of_jobs_still_running_count_against_the_day(platform: Platform) -> None:
    set_quota(platform, "acme", recordsPerDay=4)
    running = arrive(platform, "a.jsonl", rows(4))
    job = platform.jobs.get_job("acme", running.job_id)
    job.counts.records = 4  # a shard of it recorded its records; the job has more to run
    platform.jobs.replace_job(job)

    assert arrive(platform, "b.jsonl", rows(1)).status == JobStatus.REJECTED


def test_post_jobs_over_a_quota_raises_with_a_retry_after(platform: Platform) -> None:
    set_quota(platform, "acme", concurrentJobs=1)
    upload(platform, "acme", "data/a.jsonl", rows(2))
    upload(platform, "acme", "data/b.jsonl", rows(2))
    submit_job(platform, "acme", MODEL_NAME, "data/a.jsonl")

    with pytest.raises(QuotaExceeded, match="limit of 1 concurrent jobs") as raised:
        submit_job(platform, "acme", MODEL_NAME, "data/b.jsonl")
    assert raised.value.retry_after_seconds and raised.value.retry_after_seconds > 0
    # The same job again is the job that exists, not a new one over the limit.
    assert submit_job(platform, "acme", MODEL_NAME, "data/a.jsonl").status == JobStatus.QUEUED


def test_the_platforms_defaults_apply_until_the_operator_sets_a_tenants_own(platform: Platform) -> None:
    platform.default_quota = Quota(records_per_day=10, concurrent_jobs=1, max_file_bytes=0, requests_per_minute=5)
    assert quota_of(platform, "acme") == platform.default_quota

    set_quota(platform, "acme", concurrentJobs=0, requestsPerMinute=7)

    assert quota_of(platform, "acme") == replace(platform.default_quota, concurrent_jobs=0, requests_per_minute=7)
    arrive(platform, "a.jsonl", rows(1))
    assert arrive(platform, "b.jsonl", rows(1)).status == JobStatus.QUEUED  # 0: no limit


def test_set_quota_refuses_unknown_tenants_and_negative_limits(platform: Platform) -> None:
    with pytest.raises(NotFound):
        set_quota(platform, "nobody", concurrentJobs=1)
    with pytest.raises(InvalidInput):
        set_quota(platform, "acme", concurrentJobs=-1)


NOON = datetime(2026, 3, 1, 12, 0, 20, tzinfo=UTC)


def test_requests_over_the_per_minute_rate_are_refused_until_the_next_minute(platform: Platform) -> None:
    set_quota(platform, "acme", requestsPerMinute=3, now=NOON)
    add_tenant(platform, "globex")
    for _ in range(3):
        check_request_rate(platform, "acme", now=NOON)

    with pytest.raises(RateLimited) as raised:
        check_request_rate(platform, "acme", now=NOON)

    assert raised.value.retry_after_seconds == 40  # the rest of the minute
    assert raised.value.code == "RateLimited" and isinstance(raised.value, QuotaExceeded)
    check_request_rate(platform, "globex", now=NOON)  # another tenant's count
    check_request_rate(platform, "acme", now=NOON + timedelta(minutes=1))  # the next minute
    set_quota(platform, "acme", requestsPerMinute=10, now=NOON)  # raised within the minute: takes effect now
    check_request_rate(platform, "acme", now=NOON)


def test_a_lowered_rate_takes_effect_within_the_minute(platform: Platform, fakes: Fakes) -> None:
    for _ in range(3):
        check_request_rate(platform, "acme", now=NOON)
    set_quota(platform, "acme", requestsPerMinute=3, now=NOON)

    with pytest.raises(RateLimited):
        check_request_rate(platform, "acme", now=NOON)
    assert fakes.usage.requests_in("acme", rate_window(NOON)[0]) == 3


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def test_post_jobs_over_a_quota_is_429_with_retry_after_and_the_error_body(
    platform: Platform, client: TestClient
) -> None:
    key = add_tenant(platform, "initech")
    set_quota(platform, "initech", concurrentJobs=1)
    headers = {"Authorization": f"Bearer {key}"}
    for name in ("a.jsonl", "b.jsonl"):
        upload(platform, "initech", f"data/{name}", rows(2))
    first = client.post("/api/v1/jobs", headers=headers, json={"model": MODEL_NAME, "blobPath": "data/a.jsonl"})
    assert first.status_code == 202, first.text

    second = client.post("/api/v1/jobs", headers=headers, json={"model": MODEL_NAME, "blobPath": "data/b.jsonl"})

    assert second.status_code == 429, second.text
    assert int(second.headers["retry-after"]) >= 1
    assert second.json() == {
        "error": {"code": "QuotaExceeded", "message": "the tenant's limit of 1 concurrent jobs is reached"}
    }


def test_jobs_of_the_same_instant_each_count_the_other_ahead_so_neither_slips_past_the_limit() -> None:
    """Created in the same millisecond: whichever id sorts first must not pass where the other already did."""
    same = "2026-12-01T10:00:00.000Z"
    activity = TenantActivity(unfinished_jobs=3, jobs=(("2026-12-01T09:59:59.999Z", "z"), (same, "b"), (same, "a")))

    assert activity.ahead_of(same, "a") == 2  # the earlier job and its twin, whatever the ids
    assert activity.ahead_of(same, "b") == 2
    assert activity.ahead_of("2026-12-01T09:59:59.999Z", "z") == 0
