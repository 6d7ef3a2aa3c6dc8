"""Metering on the local stack: GET /api/v1/usage equals the sum over the tenant's jobs, each counted once."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bootstrap import get_platform
from shared.domain.jobs import Job, JobStatus
from shared.domain.models import ModelRef
from shared.localhost.functions_host import blob_created_event, registered_function
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import breast_cancer_jsonl, upload
from tests.e2e.test_resilience import _sigkill, _wait_for_new_workers

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "build/samples"
MODEL, OTHER = "breast-cancer-classifier", "transaction-anomaly-detector"
# A job id of the platform's form (32 hex digits) for the job whose queue message is lost.
LOST_JOB_ID = "20575000000000000000000000000000"
KEYS = ("records", "succeeded", "failed")


def lines(name: str, count: int) -> list[bytes]:
    return (SAMPLES / name).read_bytes().splitlines()[:count]


def test_usage_equals_the_sum_over_the_jobs_by_model_and_by_day(
    stack: Any, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("metered")
    platform = get_platform()
    files = {
        "good.jsonl": (MODEL, b"\n".join(lines("breast-cancer.jsonl", 30)) + b"\n"),
        "partial.jsonl": (MODEL, b"\n".join([*lines("breast-cancer.jsonl", 20), b"[1, 2, 3]", b"not json"]) + b"\n"),
        "broken.jsonl": (MODEL, b"[1]\n[2]\n[3]\n"),  # every record failed: a failed job
        "tx.jsonl": (OTHER, b"\n".join(lines("transactions.jsonl", 25)) + b"\n"),
    }
    sizes = {name: len(content) for name, (_, content) in files.items()}
    big = breast_cancer_jsonl("big", 3000)  # a dozen shards: still running when its workers are killed
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        paths = {name: upload(api, model, name, content) for name, (model, content) in files.items()}
        # A file the model does not take (written straight into the inbox: the upload API refuses it): rejected.
        platform.blobs.write_bytes("tenant-metered", f"inbox/{MODEL}/x/notes.txt", b"hello")
        sizes["notes.txt"] = len(b"hello")
        # A sharded job whose workers die mid-way: its shards are redelivered, and it is metered once.
        paths["big.jsonl"], sizes["big.jsonl"] = upload(api, MODEL, "big.jsonl", big), len(big)
        _kill_workers_while_running(stack, api, paths["big.jsonl"])
        # A job whose queue message was lost: the sweeper re-drives it, and it is metered once.
        content = b"\n".join(lines("breast-cancer.jsonl", 12)) + b"\n"
        etag = platform.blobs.write_bytes("tenant-metered", "data/lost.jsonl", content)
        sizes["lost.jsonl"] = len(content)
        card = platform.models.resolve("metered", ModelRef(MODEL))
        lost = Job("metered", LOST_JOB_ID, MODEL, card.version, "data/lost.jsonl", etag, status=JobStatus.RUNNING)
        lost.file_type, lost.content_length, lost.dispatched = ".jsonl", len(content), 1
        lost.updated_at = "2020-01-01T00:00:00.000Z"
        assert platform.jobs.create_job(lost)
        hook.wait_for(len(sizes), timeout=300)

    # Event Grid delivers BlobCreated at least once: a replay of one makes no second job and no second count.
    info = platform.blobs.get_info("tenant-metered", paths["good.jsonl"])
    registered_function("ingest_blob")(
        blob_created_event(
            account="devstoreaccount1",
            container="tenant-metered",
            blob=paths["good.jsonl"],
            etag=info.etag,
            size=info.size,
            content_type=None,
            url="http://x",
            sequencer=99,
            api="PutBlob",
        )
    )

    jobs = api.get("/v1/jobs", params={"limit": 200}).raise_for_status().json()["items"]
    assert len(jobs) == len(sizes)
    views = [api.get(f"/v1/jobs/{job['jobId']}").raise_for_status().json() for job in jobs]
    assert {v["status"] for v in views} == {"succeeded", "partially_succeeded", "failed", "rejected"}
    by_model = api.get("/v1/usage", params={"groupBy": "model"}).raise_for_status().json()
    by_day = api.get("/v1/usage", params={"groupBy": "day"}).raise_for_status().json()

    expected_model: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("jobs", *KEYS), 0))
    expected_day: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("jobs", *KEYS), 0))
    for view in views:
        for group in (
            expected_model[f"{view['model']['name']}@{view['model']['version']}"],
            expected_day[view["completedAt"][:10]],
        ):
            group["jobs"] += 1
            for key in KEYS:
                group[key] += view["counts"][key]
    pick = ("jobs", *KEYS)
    assert {i["model"]: {k: i[k] for k in pick} for i in by_model["items"]} == expected_model
    assert {i["day"]: {k: i[k] for k in pick} for i in by_day["items"]} == expected_day
    for body in (by_model, by_day):
        assert body["totals"]["jobs"] == len(views)
        assert {k: body["totals"][k] for k in KEYS} == {k: sum(v["counts"][k] for v in views) for k in KEYS}
        assert body["totals"]["bytes"] == sum(sizes.values())
    assert all(item["computeSeconds"] > 0 for item in by_model["items"])
    assert by_model["totals"]["records"] == 30 + 22 + 3 + 0 + 25 + 3000 + 12


def _kill_workers_while_running(stack: Any, api: httpx.Client, blob_path: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        mine = [
            j for j in api.get("/v1/jobs").raise_for_status().json()["items"] if j["input"]["blobPath"] == blob_path
        ]
        if mine and mine[0]["status"] == "running":
            break
        time.sleep(0.1)
    victims = {p.pid for p in list(stack.worker_processes) if _sigkill(p)}
    assert victims, "there were live workers to kill"
    _wait_for_new_workers(stack, victims)
