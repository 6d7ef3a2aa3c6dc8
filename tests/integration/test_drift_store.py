"""The drift listing's query (CosmosJobStore.list_with_drift) against the Cosmos stand-in."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.cosmos import CosmosJobStore, ensure_schema
from shared.adapters.cosmos_client import make_cosmos_client
from shared.domain.jobs import Job, JobStatus
from shared.localhost.emulators import CosmosServer

pytestmark = pytest.mark.integration
DRIFT = {"status": "ok", "features": [{"name": "f", "metric": "ks", "value": 0.5, "threshold": 0.05}], "rows": 3}


@pytest.fixture(scope="module")
def store(cosmos: CosmosServer) -> CosmosJobStore:
    client = make_cosmos_client(cosmos.endpoint, cosmos.key)
    return CosmosJobStore(ensure_schema(client, f"db{uuid.uuid4().hex[:8]}"))


def _ended(store: CosmosJobStore, tenant: str, completed_at: str, *, model: str = "m", drift: bool = True) -> Job:
    job = Job(tenant, uuid.uuid4().hex, model, "1", "inbox/m/x.jsonl", "0x1", status=JobStatus.SUCCEEDED)
    job.completed_at = completed_at
    job.drift = dict(DRIFT, status="drifted" if completed_at.endswith("3.000Z") else "ok") if drift else None
    job.shard_sketches = {0: {"v": 1, "features": [{"counts": [1, 2, 3]}]}}
    store.create_job(job)
    return job


def test_the_tenants_jobs_of_a_model_with_drift_newest_first_in_the_range_paged(store: CosmosJobStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    stamps = ["2026-03-01T00:00:01.000Z", "2026-03-01T00:00:02.000Z", "2026-03-01T00:00:02.000Z"]
    stamps += ["2026-03-01T00:00:03.000Z", "2026-03-02T00:00:00.000Z"]
    jobs = [_ended(store, tenant, stamp) for stamp in stamps]
    _ended(store, tenant, "2026-03-01T00:00:02.500Z", model="other")
    _ended(store, tenant, "2026-03-01T00:00:02.500Z", drift=False)  # a model without a profile
    _ended(store, "someone-else", "2026-03-01T00:00:02.500Z")

    seen: list[Job] = []
    token = None
    while True:
        page, token = store.list_with_drift(
            tenant,
            "m",
            completed_from="2026-03-01T00:00:00.000Z",
            completed_before="2026-03-02T00:00:00.000Z",
            limit=2,
            continuation=token,
        )
        seen += page
        if token is None:
            break
    in_range = sorted((j for j in jobs if j.completed_at < "2026-03-02"), key=lambda j: j.completed_at or "")
    assert sorted(j.job_id for j in seen) == sorted(j.job_id for j in in_range)
    assert [j.completed_at for j in seen] == sorted((j.completed_at or "" for j in in_range), reverse=True)
    assert [j.drift["status"] for j in seen if j.drift] == ["drifted", "ok", "ok", "ok"]
    assert all(j.shard_sketches == {} and j.drift == DRIFT | {"status": j.drift["status"]} for j in seen if j.drift)
