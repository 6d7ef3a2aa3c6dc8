"""The metering adapter on the Cosmos stand-in: usage records, quotas, activity, and request counters shared by
every process (two clients, two apps, one database)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.adapters.cosmos import CosmosJobStore, CosmosTenantStore, ensure_schema
from shared.adapters.cosmos_client import make_cosmos_client
from shared.adapters.cosmos_usage import CosmosUsageStore, ensure_usage_container
from shared.domain.jobs import Job, JobStatus
from shared.domain.usage import UsageRecord, rate_window
from shared.localhost.emulators import CosmosServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db_name(cosmos: CosmosServer) -> str:
    name = f"use{uuid.uuid4().hex[:8]}"
    ensure_usage_container(ensure_schema(make_cosmos_client(cosmos.endpoint, cosmos.key), name))
    return name


def store_of(cosmos: CosmosServer, db_name: str) -> CosmosUsageStore:
    """A store on a client of its own, as another process (or instance) would have."""
    return CosmosUsageStore(make_cosmos_client(cosmos.endpoint, cosmos.key).get_database_client(db_name))


@pytest.fixture
def store(cosmos: CosmosServer, db_name: str) -> CosmosUsageStore:
    return store_of(cosmos, db_name)


def record(tenant: str, job_id: str, ended_at: str, records: int = 10) -> UsageRecord:
    return UsageRecord(tenant, job_id, "succeeded", "m", "1", records, records - 1, 1, 100, 0.25, ended_at)


def test_a_jobs_usage_written_twice_is_one_record(store: CosmosUsageStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    store.put_usage(record(tenant, "job1", "2026-03-01T10:00:00.000Z"))
    store.put_usage(record(tenant, "job1", "2026-03-01T10:00:00.000Z"))
    store.put_usage(record(tenant, "job2", "2026-03-02T00:00:00.000Z", 3))
    store.put_usage(record("someone-else", "job3", "2026-03-01T11:00:00.000Z"))

    day_one = store.list_usage(tenant, ended_from="2026-03-01T00:00:00.000Z", ended_before="2026-03-02T00:00:00.000Z")
    both = store.list_usage(tenant, ended_from="2026-03-01T00:00:00.000Z", ended_before="2026-03-03T00:00:00.000Z")

    assert day_one == [record(tenant, "job1", "2026-03-01T10:00:00.000Z")]
    assert sorted(r.job_id for r in both) == ["job1", "job2"]
    assert (
        store.records_ended(tenant, ended_from="2026-03-01T00:00:00.000Z", ended_before="2026-03-03T00:00:00.000Z")
        == 13
    )
    assert (
        store.records_ended(tenant, ended_from="2027-01-01T00:00:00.000Z", ended_before="2027-01-02T00:00:00.000Z") == 0
    )


def test_quota_overrides_merge_and_read_back(store: CosmosUsageStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    assert store.get_quota(tenant) == {}
    store.put_quota(tenant, {"concurrentJobs": 3})
    store.put_quota(tenant, {"requestsPerMinute": 100})
    assert store.get_quota(tenant) == {"concurrentJobs": 3, "requestsPerMinute": 100}
    # Usage queries never see the quota document (or the counters) that shares the tenant's partition.
    assert store.list_usage(tenant, ended_from="0", ended_before="9") == []


def test_activity_counts_the_tenants_unfinished_jobs_and_their_records(
    store: CosmosUsageStore, cosmos: CosmosServer, db_name: str
) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    jobs = CosmosJobStore(make_cosmos_client(cosmos.endpoint, cosmos.key).get_database_client(db_name))
    for job_id, status, records in (
        ("a", JobStatus.QUEUED, 0),
        ("b", JobStatus.RUNNING, 7),
        ("c", JobStatus.FAILED, 5),
    ):
        job = Job(tenant, job_id, "m", "1", f"inbox/m/{job_id}.jsonl", "etag", status=status)
        job.counts.records = records
        jobs.create_job(job)

    activity = store.activity(tenant)

    assert (activity.unfinished_jobs, activity.records_in_flight) == (2, 7)
    assert [job_id for _, job_id in activity.jobs] == ["a", "b"]


def test_the_rate_limit_holds_exactly_across_clients_hitting_it_at_once(cosmos: CosmosServer, db_name: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    stores = [store_of(cosmos, db_name) for _ in range(2)]
    window = "20260301T1000"
    reads: list[int] = []

    def limit() -> int:
        reads.append(1)
        return 25

    with ThreadPoolExecutor(max_workers=8) as pool:
        counted = list(pool.map(lambda i: stores[i % 2].count_request(tenant, window, limit), range(60)))

    assert counted.count(True) == 25
    assert stores[0].requests_in(tenant, window) == 25
    assert len(reads) <= 8  # the quota is read by the window's first requests only, not by each
    assert stores[1].count_request(tenant, "20260301T1001", limit)  # the next minute starts afresh


def test_a_changed_limit_applies_to_the_minute_under_way(store: CosmosUsageStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    window = "20260301T1000"
    assert all(store.count_request(tenant, window, lambda: 0) for _ in range(5))  # 0: no limit, still counted

    store.set_rate_limit(tenant, window, 5)
    assert not store.count_request(tenant, window, lambda: 0)
    store.set_rate_limit(tenant, window, 6)
    assert store.count_request(tenant, window, lambda: 0)
    assert store.requests_in(tenant, window) == 6
    store.set_rate_limit(tenant, "20260301T1002", 1)  # no counter yet: nothing to change, no error


def _app(cosmos: CosmosServer, db_name: str) -> TestClient:
    """One API instance: its own clients and platform over the shared database."""
    from shared.api.app import create_app
    from tests.fakes import make_platform

    db = make_cosmos_client(cosmos.endpoint, cosmos.key).get_database_client(db_name)
    platform = make_platform()
    platform.tenants = CosmosTenantStore(db)
    platform.jobs = CosmosJobStore(db)
    platform.usage = CosmosUsageStore(db)
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def test_requests_over_the_rate_get_429_whichever_instance_serves_them(cosmos: CosmosServer, db_name: str) -> None:
    from shared.services.quotas import set_quota
    from shared.services.tenants import create_tenant
    from tests.fakes import make_platform

    tenant = f"t{uuid.uuid4().hex[:6]}"
    db = make_cosmos_client(cosmos.endpoint, cosmos.key).get_database_client(db_name)
    operator = make_platform()
    operator.tenants, operator.usage = CosmosTenantStore(db), CosmosUsageStore(db)
    key = create_tenant(operator, tenant)
    set_quota(operator, tenant, requestsPerMinute=6)
    apps = [_app(cosmos, db_name), _app(cosmos, db_name)]
    headers = {"Authorization": f"Bearer {key}"}

    window, left = rate_window(datetime.now(UTC))
    if left < 15:  # the burst must fit in one minute: start it in the next
        time.sleep(left + 0.1)
        window, _ = rate_window(datetime.now(UTC))
    answers: list[Any] = [apps[i % 2].get("/api/v1/jobs", headers=headers) for i in range(10)]
    assert rate_window(datetime.now(UTC))[0] == window

    assert [a.status_code for a in answers] == [200] * 6 + [429] * 4
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "RateLimited"
    assert "requests per minute" in refused.json()["error"]["message"]


def test_one_tenants_counter_never_lets_another_tenants_request_through(store: CosmosUsageStore) -> None:
    """Counters of every tenant share their ids (one per minute), each in its tenant's partition: the condition
    is the target counter's own (the stand-in once checked it against any document of that id)."""
    window = "20260301T1100"
    generous, capped = f"g{uuid.uuid4().hex[:6]}", f"c{uuid.uuid4().hex[:6]}"
    assert store.count_request(generous, window, lambda: 0)

    counted = [store.count_request(capped, window, lambda: 2) for _ in range(4)]

    assert counted == [True, True, False, False]
    assert store.requests_in(capped, window) == 2
