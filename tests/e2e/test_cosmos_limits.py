"""Cosmos DB's limits on the local stack: records bigger than an item come back whole; a throttled database is a 503."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobClient

from shared.bootstrap import get_platform
from shared.localhost.host import LocalHost
from tests.e2e._api import all_results

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
ROWS = [json.loads(line) for line in (REPO / "build/samples/breast-cancer.jsonl").read_text().splitlines()]
MODEL = "breast-cancer-classifier"
TERMINAL = {"succeeded", "partially_succeeded", "failed", "rejected", "cancelled"}


def _row(i: int, record_id: str, *, drop: str | None = None) -> bytes:
    row = {k: v for k, v in ROWS[i].items() if k not in {"expected", drop}}
    row["id"] = record_id
    return json.dumps(row).encode()


def _upload_and_wait(api: httpx.Client, filename: str, content: bytes, timeout: float = 120) -> dict[str, Any]:
    answer = api.post("/v1/uploads", json={"model": MODEL, "filename": filename}).raise_for_status().json()
    BlobClient.from_blob_url(answer["uploadUrl"]).upload_blob(content)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = api.get("/v1/jobs").raise_for_status().json()["items"]
        job = next((j for j in jobs if j["input"]["blobPath"] == answer["blobPath"]), None)
        if job and job["status"] in TERMINAL:
            return job  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"no finished job for {answer['blobPath']} within {timeout} s")


def test_records_bigger_than_a_cosmos_item_are_stored_and_come_back_whole(
    create_tenant: Callable[[str], httpx.Client],
) -> None:
    api = create_tenant("bigrecords")
    ids = ["small-0", "big-" + "x" * 3_000_000, "small-2", "bad-" + "y" * 2_500_000, "mid-" + "z" * 1_200_000]
    lines = [
        _row(i, record_id, drop="mean radius" if record_id.startswith("bad-") else None)
        for i, record_id in enumerate(ids)
    ]
    job = _upload_and_wait(api, "big.jsonl", b"\n".join(lines) + b"\n")

    assert job["status"] == "partially_succeeded", job
    assert job["counts"] == {"records": 5, "succeeded": 4, "failed": 1}
    results = all_results(api, job["jobId"], limit=2)
    assert [r["recordIndex"] for r in results] == [0, 1, 2, 4]
    assert [r["id"] for r in results] == [ids[0], ids[1], ids[2], ids[4]]  # every byte of every id
    assert all(r["output"]["label"] in {row["expected"] for row in ROWS} for r in results)
    outbox = get_platform().blobs.read_bytes("tenant-bigrecords", f"outbox/{job['jobId']}/results.jsonl")
    # The API adds the region that produced them to each result; the file holds the records as they were stored.
    assert {r.pop("region") for r in results} == {"local"}
    assert [json.loads(line) for line in outbox.splitlines()] == results
    errors = get_platform().blobs.read_bytes("tenant-bigrecords", f"outbox/{job['jobId']}/errors.jsonl")
    [error] = [json.loads(line) for line in errors.splitlines()]
    assert error["recordIndex"] == 3 and error["id"] == ids[3]


def test_a_throttled_database_is_retried_then_answers_503_with_retry_after(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("throttled")
    job = _upload_and_wait(api, "rows.jsonl", b"\n".join(_row(i, f"r{i}") for i in range(3)) + b"\n")
    admin = httpx.Client(base_url=stack.cosmos.endpoint, verify=False, timeout=10)
    the_job = {"path": f"/colls/jobs/docs/{job['jobId']}$", "method": "GET"}
    try:
        # Throttled three times: the SDK waits as Cosmos DB asks and the caller never knows.
        admin.post("/_aiaas/faults", json={"status": 429, "count": 3, "retryAfterMs": 50, **the_job}).raise_for_status()
        answer = api.get(f"/v1/jobs/{job['jobId']}")
        assert answer.status_code == 200 and answer.json()["status"] == job["status"], answer.text
        assert admin.get("/_aiaas/faults").json()["hits"] == 3

        # Throttled past the SDK's nine retries: 503 with Retry-After and the error body, never a 500.
        admin.post("/_aiaas/faults", json={"status": 429, "count": 1000, "retryAfterMs": 100, **the_job})
        answer = api.get(f"/v1/jobs/{job['jobId']}")
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["error"]["code"] == "ServiceBusy" and answer.json()["error"]["message"]
        assert admin.get("/_aiaas/faults").json()["hits"] >= 10

        admin.delete("/_aiaas/faults").raise_for_status()
        assert api.get(f"/v1/jobs/{job['jobId']}").status_code == 200
    finally:
        admin.delete("/_aiaas/faults")
        admin.close()
