"""Metering over the fakes: one usage record per ended job, counted once whatever retries, and GET /api/v1/usage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent
from shared.domain.jobs import Job
from shared.domain.usage import UsageRecord, aggregate, time_range, usage_id
from shared.services.ingest import admit_blob_created
from shared.services.outcomes import publish_terminal_event
from shared.services.platform import Platform
from shared.services.shards import run_shard
from shared.services.sweeper import sweep
from shared.services.usage import record_usage, usage_report
from tests.fakes import MODEL_NAME, Fakes, add_tenant, sample_bytes, upload


def rows(count: int, *, bad: int = 0) -> bytes:
    """`count` good records of the sample, then `bad` lines that are not JSON (each a failed record)."""
    lines = sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)[:count]
    return b"".join(lines) + b"not json\n" * bad


def run_job(platform: Platform, name: str, data: bytes, tenant_id: str = "acme") -> Job:
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, tenant_id, path, upload(platform, tenant_id, path, data))
    assert job is not None
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        run_shard(platform, message)
    return platform.jobs.get_job(tenant_id, job.job_id)


def test_an_ended_job_has_one_usage_record_with_its_counts_size_model_and_compute(
    platform: Platform, fakes: Fakes
) -> None:
    data = rows(6, bad=2)
    job = run_job(platform, "mixed.jsonl", data)

    [doc] = fakes.usage.records.values()
    record = UsageRecord.from_doc(doc)
    assert job.status.value == "partially_succeeded"
    assert (record.records, record.succeeded, record.failed) == (8, 6, 2)
    assert record.bytes_read == len(data)
    assert (record.model_name, record.model_version) == (job.model_name, job.model_version)
    assert record.compute_seconds > 0
    assert record.compute_seconds == round(job.compute_seconds, 6)
    assert record.ended_at == job.completed_at and record.day == job.completed_at[:10]  # type: ignore[index]
    assert doc["id"] == usage_id(job.job_id) and doc["tenantId"] == "acme"


def test_the_usage_record_is_written_before_the_terminal_event_goes_out(platform: Platform, fakes: Fakes) -> None:
    seen: list[int] = []
    publish = fakes.events.publish

    def publish_after_checking(events: Sequence[PlatformEvent]) -> None:
        seen.append(len(fakes.usage.records))
        publish(events)

    fakes.events.publish = publish_after_checking  # type: ignore[method-assign]
    run_job(platform, "a.jsonl", rows(3))
    assert seen == [1]


def test_a_usage_write_that_fails_holds_the_event_back_until_the_sweeper_meters_and_sends_it(
    platform: Platform, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def store_down(record: UsageRecord) -> None:
        raise ConnectionError("usage store down")

    monkeypatch.setattr(fakes.usage, "put_usage", store_down)
    path = f"inbox/{MODEL_NAME}/a.jsonl"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, rows(3)))
    assert job is not None
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        with pytest.raises(ConnectionError):
            run_shard(platform, message)
    assert fakes.events.of_job(job.job_id) == []
    monkeypatch.undo()
    ended = platform.jobs.get_job("acme", job.job_id)
    ended.updated_at = "2000-01-01T00:00:00.000Z"
    platform.jobs.replace_job(ended)

    sweep(platform, stalled_after=timedelta(seconds=0), max_sweeps=5)

    assert len(fakes.events.of_job(job.job_id)) == 1
    assert [UsageRecord.from_doc(d).records for d in fakes.usage.records.values()] == [3]


def test_writing_a_jobs_usage_again_counts_it_once(platform: Platform, fakes: Fakes) -> None:
    job = run_job(platform, "a.jsonl", rows(4, bad=1))
    record_usage(platform, job)
    record_usage(platform, job)
    job.event_published = False  # as a republish finds it: the sweeper's path writes the record again
    publish_terminal_event(platform, job)

    assert fakes.usage.puts == 4
    report = usage_report(platform, "acme", start=None, end=None, group_by="model")
    assert report["totals"] == {
        "jobs": 1,
        "records": 5,
        "succeeded": 4,
        "failed": 1,
        "bytes": len(rows(4, bad=1)),
        "computeSeconds": round(job.compute_seconds, 3),
    }


def test_a_redelivered_shard_keeps_its_one_compute_figure(platform: Platform, fakes: Fakes) -> None:
    path = f"inbox/{MODEL_NAME}/a.jsonl"
    admitted = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, rows(5)))
    assert admitted is not None
    [message] = platform.queue.drain()  # type: ignore[attr-defined]
    run_shard(platform, message)
    first = platform.jobs.get_job("acme", admitted.job_id)
    run_shard(platform, message)  # the queue delivers it again (a lost ack)

    job = platform.jobs.get_job("acme", admitted.job_id)
    assert list(job.shard_compute_seconds) == [0]
    assert job.compute_seconds == first.compute_seconds
    [doc] = fakes.usage.records.values()
    assert doc["computeSeconds"] == round(first.compute_seconds, 6)


def test_a_rejected_upload_is_metered_with_no_records(platform: Platform, fakes: Fakes) -> None:
    path = "inbox/no-such-model/a.jsonl"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, rows(3)))
    assert job is not None and job.status.value == "rejected"

    [doc] = fakes.usage.records.values()
    assert (doc["status"], doc["records"], doc["succeeded"], doc["failed"], doc["computeSeconds"]) == (
        "rejected",
        0,
        0,
        0,
        0.0,
    )
    assert doc["bytes"] == len(rows(3))


def usage(model: str, ended_at: str, records: int, failed: int = 0, job_id: str = "") -> UsageRecord:
    return UsageRecord(
        tenant_id="acme",
        job_id=job_id or f"{model}-{ended_at}-{records}",
        status="succeeded",
        model_name=model,
        model_version="1",
        records=records,
        succeeded=records - failed,
        failed=failed,
        bytes_read=10 * records,
        compute_seconds=0.5,
        ended_at=ended_at,
    )


def test_aggregates_by_model_and_by_day_sum_to_the_totals() -> None:
    records = [
        usage("a", "2026-03-01T10:00:00.000Z", 10, 1),
        usage("a", "2026-03-02T23:59:59.999Z", 5),
        usage("b", "2026-03-02T00:00:00.000Z", 7, 7),
    ]

    by_model, totals = aggregate(records, "model")
    by_day, day_totals = aggregate(records, "day")

    assert [(i["model"], i["jobs"], i["records"], i["failed"]) for i in by_model] == [
        ("a@1", 2, 15, 1),
        ("b@1", 1, 7, 7),
    ]
    assert [(i["day"], i["jobs"], i["records"], i["bytes"]) for i in by_day] == [
        ("2026-03-01", 1, 10, 100),
        ("2026-03-02", 2, 12, 120),
    ]
    assert (
        totals
        == day_totals
        == {
            "jobs": 3,
            "records": 22,
            "succeeded": 14,
            "failed": 8,
            "bytes": 220,
            "computeSeconds": 1.5,
        }
    )
    with pytest.raises(InvalidInput):
        aggregate(records, "tenant")


def test_time_ranges_take_dates_and_datetimes_and_refuse_bad_ones() -> None:
    now = datetime(2026, 3, 15, 12, 30, tzinfo=UTC)
    assert time_range(None, None, now=now) == ("2026-02-14T00:00:00.000Z", "2026-03-16T00:00:00.000Z")
    assert time_range("2026-03-01", "2026-03-01", now=now) == ("2026-03-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z")
    assert time_range("2026-03-01T10:00:00+02:00", "2026-03-01T12:00:00Z", now=now) == (
        "2026-03-01T08:00:00.000Z",
        "2026-03-01T12:00:00.000Z",
    )
    for bad in ("yesterday", "2026-13-01", "2026-02-30", "1", ""):
        with pytest.raises(InvalidInput, match="ISO 8601"):
            time_range(bad or " ", None, now=now)
    with pytest.raises(InvalidInput, match="after"):
        time_range("2026-03-02", "2026-03-01", now=now)


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_get_usage_matches_the_jobs_exactly_by_model_and_by_day(platform: Platform, client: TestClient) -> None:
    key = add_tenant(platform, "initech")
    jobs = [
        run_job(platform, "a.jsonl", rows(5), "initech"),
        run_job(platform, "b.jsonl", rows(3, bad=2), "initech"),
        run_job(platform, "c.jsonl", rows(0, bad=3), "initech"),  # every record failed: a failed job
        run_job(platform, "d.csv", rows(2), "initech"),  # a .jsonl model given a .csv name: rejected
    ]
    run_job(platform, "other.jsonl", rows(4), "acme")  # another tenant's: never in initech's usage
    views = [client.get(f"/api/v1/jobs/{job.job_id}", headers=auth(key)).json() for job in jobs]
    assert {v["status"] for v in views} >= {"succeeded", "partially_succeeded", "failed"}

    by_model = client.get("/api/v1/usage", headers=auth(key), params={"groupBy": "model"})
    by_day = client.get("/api/v1/usage", headers=auth(key), params={"groupBy": "day"})

    assert by_model.status_code == 200, by_model.text
    expected = {k: sum(v["counts"][k] for v in views) for k in ("records", "succeeded", "failed")}
    for body in (by_model.json(), by_day.json()):
        totals = body["totals"]
        assert {k: totals[k] for k in expected} == expected
        assert totals["jobs"] == len(jobs)
        assert sum(item["records"] for item in body["items"]) == expected["records"]
    [day] = by_day.json()["items"]
    assert day["day"] == views[0]["completedAt"][:10]
    models = {item["model"]: item for item in by_model.json()["items"]}
    ran = [v for v in views if v["status"] != "rejected"]
    assert models[f"{MODEL_NAME}@{ran[0]['model']['version']}"]["jobs"] == len(ran)
    quota = by_model.json()["quota"]
    assert set(quota) == {"recordsPerDay", "concurrentJobs", "maxFileBytes", "requestsPerMinute"}


def test_get_usage_of_a_range_without_jobs_is_empty_and_bad_ranges_are_400(
    platform: Platform, client: TestClient
) -> None:
    key = add_tenant(platform, "initech")
    run_job(platform, "a.jsonl", rows(2), "initech")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()

    later = client.get("/api/v1/usage", headers=auth(key), params={"from": tomorrow}).json()
    assert later["items"] == [] and later["totals"]["jobs"] == 0
    for params in ({"from": "last week"}, {"to": "2026-02-30"}, {"from": tomorrow, "to": "2020-01-01"}):
        response = client.get("/api/v1/usage", headers=auth(key), params=params)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "InvalidTimeRange"
    bad_group = client.get("/api/v1/usage", headers=auth(key), params={"groupBy": "tenant"})
    assert bad_group.status_code == 400 and bad_group.json()["error"]["code"] == "InvalidGroupBy"


def test_usage_shows_each_limit_with_what_is_left(platform: Platform, client: TestClient) -> None:
    from shared.services.quotas import set_quota

    key = add_tenant(platform, "initech")
    set_quota(platform, "initech", recordsPerDay=100, concurrentJobs=3, requestsPerMinute=50)
    run_job(platform, "a.jsonl", rows(4), "initech")

    quota: dict[str, Any] = client.get("/api/v1/usage", headers=auth(key)).json()["quota"]

    assert quota["recordsPerDay"] == {"limit": 100, "used": 4, "remaining": 96}
    assert quota["concurrentJobs"] == {"limit": 3, "used": 0, "remaining": 3}
    assert quota["maxFileBytes"] == {"limit": platform.default_quota.max_file_bytes or None}
    assert quota["requestsPerMinute"]["limit"] == 50
