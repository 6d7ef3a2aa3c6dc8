"""The local stack through the public contract: CLI, HTTP API, SAS upload, Event Grid events, isolation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bootstrap import get_platform
from shared.localhost.functions_host import blob_created_event, registered_function
from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import all_results, upload, without_region

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "build/samples/breast-cancer.jsonl"
CARD = json.loads((REPO / "build/models/breast-cancer-classifier/1/card.json").read_text())
MODEL = "breast-cancer-classifier"


def _subscribe(api: httpx.Client, hook: WebhookReceiver, schema: str = "EventGridSchema") -> dict[str, Any]:
    answer = api.post("/v1/subscriptions", json={"endpointUrl": hook.url, "schema": schema})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _deliveries(hook: WebhookReceiver, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Every delivery the endpoint got, once `count` came and a moment passed for any duplicate to follow.

    The local broker, like Event Grid, delivers each publish (it does not drop a repeated id), so a second
    publish of a job's terminal event would show here.
    """
    hook.wait_for(count, timeout=timeout)
    time.sleep(1.0)
    delivered = list(hook.events)
    assert len(delivered) == count, [(e.get("eventType") or e.get("type"), e["id"]) for e in delivered]
    return delivered


def test_tenant_gets_one_event_and_every_result(stack: LocalHost, create_tenant: Callable[[str], httpx.Client]) -> None:
    acme = create_tenant("acme")
    with WebhookReceiver() as hook:
        _subscribe(acme, hook)
        blob_path = upload(acme, MODEL, "rows.jsonl", SAMPLE.read_bytes())
        [event] = _deliveries(hook, 1)  # exactly one terminal event per job

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    data = event["data"]
    assert event["eventType"] == "AIaaS.Job.Succeeded"
    assert event["subject"] == f"/tenants/acme/jobs/{data['jobId']}"
    assert data["tenantId"] == "acme" and data["status"] == "succeeded"
    assert data["model"] == {"name": MODEL, "version": CARD["version"]}
    assert data["input"]["blobPath"] == blob_path and data["input"]["etag"]
    assert data["counts"] == {"records": len(rows), "succeeded": len(rows), "failed": 0}
    assert data["links"]["job"].endswith(f"/v1/jobs/{data['jobId']}")
    assert data["links"]["outputBlob"] == f"outbox/{data['jobId']}/results.jsonl"
    assert "error" not in data

    job = acme.get(f"/v1/jobs/{data['jobId']}").raise_for_status().json()
    assert job["status"] == "succeeded" and job["counts"] == data["counts"]
    results = all_results(acme, data["jobId"], limit=50)
    assert [r["recordIndex"] for r in results] == list(range(len(rows)))
    assert [r["id"] for r in results] == [row["id"] for row in rows]
    accuracy = sum(r["output"]["label"] == row["expected"] for r, row in zip(results, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(CARD["metrics"]["accuracy"], abs=0.01)
    outbox = get_platform().blobs.read_bytes("tenant-acme", data["links"]["outputBlob"]).splitlines()
    assert [json.loads(line)["id"] for line in outbox] == [row["id"] for row in rows]

    # Another tenant sees none of it: 404 exactly as for things that do not exist.
    globex = create_tenant("globex")
    for path in (f"/v1/jobs/{data['jobId']}", f"/v1/jobs/{data['jobId']}/results", "/v1/jobs/doesnotexist"):
        answer = globex.get(path)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "NotFound"
    [acme_sub] = acme.get("/v1/subscriptions").json()["items"]
    assert globex.get(f"/v1/subscriptions/{acme_sub['subscriptionId']}").status_code == 404
    assert globex.delete(f"/v1/subscriptions/{acme_sub['subscriptionId']}").status_code == 404
    assert globex.get("/v1/jobs").json()["items"] == []
    assert httpx.get(f"{stack.api_url}/v1/jobs").status_code == 401


def test_cloudevents_subscriber_and_partial_failure(create_tenant: Callable[[str], httpx.Client]) -> None:
    initech = create_tenant("initech")
    lines = SAMPLE.read_bytes().splitlines()[:10]
    broken = [*lines[:5], b'{"id": "bad-value", "mean radius": "twelve"}', b"[1, 2, 3]", *lines[5:]]
    with WebhookReceiver() as hook:
        _subscribe(initech, hook, schema="CloudEventSchemaV1_0")
        upload(initech, MODEL, "some-broken.jsonl", b"\n".join(broken) + b"\n")
        [event] = _deliveries(hook, 1)
    assert event["specversion"] == "1.0" and event["type"] == "AIaaS.Job.PartiallySucceeded"
    data = event["data"]
    assert data["counts"] == {"records": 12, "succeeded": 10, "failed": 2}
    assert data["error"]["code"] == "SomeRecordsFailed"
    errors = [
        json.loads(line)
        for line in get_platform()
        .blobs.read_bytes("tenant-initech", f"outbox/{data['jobId']}/errors.jsonl")
        .splitlines()
    ]
    assert [(e["line"], e["id"]) for e in errors] == [(6, "bad-value"), (7, None)]
    assert "mean radius" in errors[0]["message"]
    assert len(all_results(initech, data["jobId"])) == 10
    assert [without_region(e) for e in all_results(initech, data["jobId"], kind="errors")] == errors


def test_replayed_and_rejected_uploads(stack: LocalHost, create_tenant: Callable[[str], httpx.Client]) -> None:
    umbrella = create_tenant("umbrella")
    platform = get_platform()
    with WebhookReceiver() as hook:
        _subscribe(umbrella, hook)
        blob_path = upload(umbrella, MODEL, "replayed.jsonl", b"\n".join(SAMPLE.read_bytes().splitlines()[:3]))
        hook.wait_for(1, timeout=60)
        # Event Grid delivers at least once: the same BlobCreated three more times makes no new job or event.
        info = platform.blobs.get_info("tenant-umbrella", blob_path)
        ingest = registered_function("ingest_blob")
        for attempt in range(3):
            ingest(
                blob_created_event(
                    account="devstoreaccount1",
                    container="tenant-umbrella",
                    blob=blob_path,
                    etag=info.etag,
                    size=info.size,
                    content_type=None,
                    url="http://x",
                    sequencer=attempt,
                    api="PutBlockList" if attempt else "PutBlob",
                )
            )
        time.sleep(1.0)
        assert len(hook.events) == 1
        # Overwriting the blob (a new ETag) is a new job.
        platform.blobs.write_bytes("tenant-umbrella", blob_path, SAMPLE.read_bytes().splitlines()[0])
        hook.wait_for(2, timeout=60)
        # A file the model does not take is rejected with a reason; so is an unknown model.
        platform.blobs.write_bytes("tenant-umbrella", f"inbox/{MODEL}/x/notes.txt", b"hello")
        platform.blobs.write_bytes("tenant-umbrella", "inbox/no-such-model/x/rows.jsonl", b"{}")
        events = _deliveries(hook, 4)
    jobs = umbrella.get("/v1/jobs").json()["items"]
    assert len(jobs) == 4
    by_type = sorted((e["eventType"], e["data"].get("error", {}).get("code")) for e in events)
    assert by_type == [
        ("AIaaS.Job.Rejected", "UnknownModel"),
        ("AIaaS.Job.Rejected", "UnsupportedFileType"),
        ("AIaaS.Job.Succeeded", None),
        ("AIaaS.Job.Succeeded", None),
    ]
    assert len({e["data"]["jobId"] for e in events}) == 4


def test_job_over_an_existing_blob_via_the_api(create_tenant: Callable[[str], httpx.Client]) -> None:
    hooli = create_tenant("hooli")
    get_platform().blobs.write_bytes(
        "tenant-hooli", "data/archive.csv", (REPO / "build/samples/breast-cancer.csv").read_bytes()
    )
    with WebhookReceiver() as hook:
        _subscribe(hooli, hook)
        answer = hooli.post("/v1/jobs", json={"model": f"{MODEL}@production", "blobPath": "data/archive.csv"})
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["status"] == "queued" and job["model"]["version"] == CARD["version"]
        [event] = _deliveries(hook, 1)
    assert event["data"]["jobId"] == job["jobId"] and event["data"]["counts"]["succeeded"] == 50
    for body, code in [
        ({"model": "nope", "blobPath": "data/archive.csv"}, "UnknownModel"),
        ({"model": MODEL, "blobPath": "data/missing.csv"}, "BlobNotFound"),
        ({"model": MODEL}, "InvalidRequest"),
    ]:
        answer = hooli.post("/v1/jobs", json=body)
        assert 400 <= answer.status_code < 500 and answer.json()["error"]["code"] == code
