"""Quotas on the local stack: `aiaas tenants set-quota`, then uploads and calls over each limit are refused."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bootstrap import get_platform
from shared.domain.jobs import Job, JobStatus
from shared.domain.usage import rate_window
from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer-classifier"
ROWS = (REPO / "build/samples/breast-cancer.jsonl").read_bytes().splitlines()
# A job id of the platform's form for the job that holds the tenant's one slot.
HELD_JOB_ID = "30575000000000000000000000000000"


def set_quota(stack: LocalHost, tenant_id: str, *flags: str) -> dict[str, Any]:
    """The operator's `aiaas tenants set-quota`, run as a separate process (as an operator would)."""
    done = subprocess.run(
        [str(REPO / ".venv/bin/aiaas"), "tenants", "set-quota", tenant_id, *flags],
        env={**os.environ, **stack.environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def jsonl(count: int) -> bytes:
    return b"\n".join(ROWS[:count]) + b"\n"


def next_event(hook: WebhookReceiver, seen: int) -> dict[str, Any]:
    events = hook.wait_for(seen + 1, timeout=60)
    time.sleep(0.5)  # room for a duplicate to show
    assert len(hook.events) == seen + 1, [e["eventType"] for e in hook.events]
    return events[seen]


def test_uploads_over_each_quota_end_as_one_rejection_naming_the_limit(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("quotaco")
    answer = set_quota(stack, "quotaco", "--concurrent-jobs", "1")
    assert answer["quota"]["concurrentJobs"] == 1
    # A job under way holds the one slot (never swept: it was touched "in the future").
    held = Job("quotaco", HELD_JOB_ID, MODEL, None, "data/held.jsonl", "etag", status=JobStatus.RUNNING)
    held.updated_at, held.dispatched = "2999-01-01T00:00:00.000Z", 1  # its one shard "in flight"
    assert get_platform().jobs.create_job(held)
    get_platform().blobs.write_bytes("tenant-quotaco", "data/rows.jsonl", jsonl(3))
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()

        upload(api, MODEL, "one-too-many.jsonl", jsonl(3))
        event = next_event(hook, 0)
        assert event["eventType"] == "AIaaS.Job.Rejected"
        assert event["data"]["error"] == {
            "code": "QuotaExceeded",
            "message": "the tenant's limit of 1 concurrent jobs is reached",
        }
        assert event["data"]["counts"] == {"records": 0, "succeeded": 0, "failed": 0}

        refused = api.post("/v1/jobs", json={"model": MODEL, "blobPath": "data/rows.jsonl"})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "QuotaExceeded"
        usage = api.get("/v1/usage").raise_for_status().json()
        assert usage["quota"]["concurrentJobs"] == {"limit": 1, "used": 1, "remaining": 0}

        set_quota(stack, "quotaco", "--concurrent-jobs", "0", "--max-file-bytes", "100")
        upload(api, MODEL, "too-big.jsonl", jsonl(3))
        event = next_event(hook, 1)
        assert event["eventType"] == "AIaaS.Job.Rejected"
        assert event["data"]["error"]["code"] == "QuotaExceeded"
        assert "limit of 100 bytes per file" in event["data"]["error"]["message"]

        set_quota(stack, "quotaco", "--max-file-bytes", "0", "--records-per-day", "5")
        upload(api, MODEL, "five.jsonl", jsonl(5))
        assert next_event(hook, 2)["eventType"] == "AIaaS.Job.Succeeded"
        upload(api, MODEL, "sixth.jsonl", jsonl(1))
        event = next_event(hook, 3)
        assert event["eventType"] == "AIaaS.Job.Rejected"
        assert event["data"]["error"]["code"] == "QuotaExceeded"
        assert "limit of 5 records per day" in event["data"]["error"]["message"]
    usage = api.get("/v1/usage").raise_for_status().json()
    assert usage["quota"]["recordsPerDay"] == {"limit": 5, "used": 5, "remaining": 0}
    assert usage["totals"]["jobs"] == 4 and usage["totals"]["records"] == 5


def test_requests_over_the_per_minute_rate_are_429_with_retry_after(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("chatty")
    set_quota(stack, "chatty", "--requests-per-minute", "5")
    window, left = rate_window(datetime.now(UTC))
    if left < 15:  # the burst must fit in one minute: start it in the next
        time.sleep(left + 0.1)
        window, _ = rate_window(datetime.now(UTC))

    answers = [api.get("/v1/jobs") for _ in range(8)]

    assert rate_window(datetime.now(UTC))[0] == window
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "RateLimited"
    other = create_tenant("quiet")
    assert other.get("/v1/jobs").status_code == 200  # another tenant's own count
