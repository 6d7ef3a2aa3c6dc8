"""Cancel and metadata on the local stack: a big job stopped mid-run keeps what ran; metadata rides in its event."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobClient

from shared.bootstrap import get_platform
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import all_results, breast_cancer_jsonl, upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer-classifier"
ROUTING = {"costCentre": "cc-42", "flow.name": "nightly-scoring"}


def job_of(api: httpx.Client, blob_path: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in api.get("/v1/jobs").raise_for_status().json()["items"]:
            if job["input"]["blobPath"] == blob_path:
                return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"no job for {blob_path}")


def wait_job(api: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there: {job}")


def test_a_big_job_cancelled_mid_run_ends_cancelled_with_what_ran(
    stack: Any, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("canceller")
    records = 8000  # about 5.5 MB: some twenty shards of 256 KB, two in flight at a time
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        request = {"model": MODEL, "filename": "big.jsonl", "metadata": ROUTING}
        answer = api.post("/v1/uploads", json=request)
        assert answer.status_code == 201, answer.text
        BlobClient.from_blob_url(answer.json()["uploadUrl"]).upload_blob(breast_cancer_jsonl("row", records))
        path = answer.json()["blobPath"]
        job_id = job_of(api, path)["jobId"]
        running = wait_job(api, job_id, lambda j: j["shards"]["done"] >= 1 or j["status"] != "queued", 180)
        assert running["status"] in {"queued", "running"} and running["metadata"] == ROUTING

        cancel = api.post(f"/v1/jobs/{job_id}/cancel")
        assert cancel.status_code == 202, cancel.text
        assert cancel.json()["jobId"] == job_id and cancel.json()["status"] in {"running", "cancelled"}
        ended = wait_job(api, job_id, lambda j: j["status"] not in {"queued", "running"}, 120)
        assert ended["status"] == "cancelled", ended
        assert ended["error"]["code"] == "Cancelled"
        assert 0 < ended["counts"]["records"] < records  # later shards never ran
        # Later shards never ran: either planned and skipped, or never planned (a cancel stops the planner too).
        assert ended["shards"]["done"] <= ended["shards"]["count"]
        assert ended["metadata"] == ROUTING

        # Again: 202 with the cancelled job, and no second event.
        again = api.post(f"/v1/jobs/{job_id}/cancel")
        assert again.status_code == 202 and again.json()["status"] == "cancelled"
        events = hook.wait_until(lambda: any(e["data"]["jobId"] == job_id for e in hook.events), 60)
        time.sleep(2)  # a second event, if one were sent, would be delivered by now (an hour per second)
        mine = [e for e in hook.events if e["data"].get("jobId") == job_id]
        assert [e["eventType"] for e in mine] == ["AIaaS.Job.Cancelled"], events
        (event,) = mine
        assert event["data"]["status"] == "cancelled" and event["data"]["metadata"] == ROUTING
        assert event["data"]["counts"] == ended["counts"]

    # What ran stays readable: through the results API and in the output file.
    results = all_results(api, job_id)
    assert len(results) == ended["counts"]["succeeded"] > 0
    assert len({r["recordIndex"] for r in results}) == len(results)
    output = ended["links"]["outputBlob"]
    content = get_platform().blobs.read_bytes("tenant-canceller", output)
    assert len(content.splitlines()) == ended["counts"]["succeeded"]
    # Metering counts what ran.
    usage = api.get("/v1/usage").raise_for_status().json()
    assert usage["totals"]["records"] == ended["counts"]["records"]

    # A finished job cannot be cancelled.
    small = upload(api, MODEL, "small.jsonl", breast_cancer_jsonl("row", 5))
    done = wait_job(api, job_of(api, small)["jobId"], lambda j: j["status"] == "succeeded", 120)
    refused = api.post(f"/v1/jobs/{done['jobId']}/cancel")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "JobAlreadyFinished"


def test_another_tenants_job_cannot_be_cancelled(stack: Any, create_tenant: Callable[[str], httpx.Client]) -> None:
    owner, other = create_tenant("cancel-owner"), create_tenant("cancel-other")
    path = upload(owner, MODEL, "rows.jsonl", breast_cancer_jsonl("row", 3))
    job_id = job_of(owner, path)["jobId"]
    answer = other.post(f"/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "NotFound"


def test_metadata_of_a_submitted_job_round_trips_to_its_event(
    stack: Any, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("labelled")
    get_platform().blobs.write_bytes("tenant-labelled", "data/rows.jsonl", breast_cancer_jsonl("row", 4))
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        answer = api.post("/v1/jobs", json={"model": MODEL, "blobPath": "data/rows.jsonl", "metadata": ROUTING})
        assert answer.status_code == 202, answer.text
        assert answer.json()["metadata"] == ROUTING
        (event,) = hook.wait_for(1, timeout=120)
    assert event["eventType"] == "AIaaS.Job.Succeeded" and event["data"]["metadata"] == ROUTING
    bad = api.post("/v1/jobs", json={"model": MODEL, "blobPath": "data/rows.jsonl", "metadata": {"bad key": "x"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidMetadata"
