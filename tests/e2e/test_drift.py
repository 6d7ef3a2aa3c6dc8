"""Drift through the public contract: held-out rows stay ok, scaled or shuffled rows drift with one event, over time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer-classifier"
PACKAGE = REPO / "build/models" / MODEL / "1"
CARD = json.loads((PACKAGE / "card.json").read_text())
# The profile's reference is the model's 426 training rows; the sample is the 143 held-out rows (the build's
# stratified 25% split), which the model never trained on: clean data for this model.
HELD_OUT = REPO / "build/samples/breast-cancer.jsonl"


def held_out() -> list[dict[str, Any]]:
    return [json.loads(line) for line in HELD_OUT.read_text().splitlines() if line.strip()]


def scaled(rows: list[dict[str, Any]], factor: float = 1.5) -> list[dict[str, Any]]:
    """Every feature x1.5 (a unit change upstream, say)."""
    return [{k: row[k] * factor if k in CARD["features"] else row[k] for k in row} for row in rows]


def shuffled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each feature's value moved to the next column (a file whose columns were mixed up)."""
    names = CARD["features"]
    return [{"id": row["id"], **{n: row[names[(i + 1) % len(names)]] for i, n in enumerate(names)}} for row in rows]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def finished(api: httpx.Client, hook: WebhookReceiver, filename: str, content: bytes, events: int) -> dict[str, Any]:
    """Uploads the file, waits for its terminal event (and any drift event after it), returns the job."""
    blob_path = upload(api, MODEL, filename, content)
    before = len(hook.events)
    hook.wait_until(
        lambda: (
            len(hook.events) >= before + events
            and any(
                e["eventType"].startswith("AIaaS.Job.") and e["data"]["input"]["blobPath"] == blob_path
                for e in hook.events[before:]
            )
        ),
        timeout=120,
    )
    time.sleep(1.0)  # a moment for an event published after the terminal one (or a duplicate) to arrive
    assert len(hook.events) == before + events, [e["eventType"] for e in hook.events[before:]]
    terminal = next(e for e in hook.events[before:] if e["eventType"].startswith("AIaaS.Job."))
    job = api.get(f"/v1/jobs/{terminal['data']['jobId']}").raise_for_status().json()
    assert job["status"] == "succeeded", job
    return job  # type: ignore[no-any-return]


def drift_events(hook: WebhookReceiver, job_id: str) -> list[dict[str, Any]]:
    return [e for e in hook.events if e["eventType"] == "AIaaS.Model.DriftDetected" and e["data"]["jobId"] == job_id]


def assert_drift_section(drift: dict[str, Any], status: str, rows: int) -> None:
    assert drift["status"] == status and drift["rows"] == rows
    assert [f["name"] for f in drift["features"]] == CARD["features"]
    for feature in drift["features"]:  # 426 reference rows: Evidently's rule takes KS at p < 0.05
        assert feature["metric"] == "ks" and feature["threshold"] == 0.05
        assert feature["drifted"] == (feature["value"] < feature["threshold"])
    assert drift["prediction"]["metric"] == "chi-square"


def test_drift_per_job_one_event_when_drifted_listed_over_time_and_tenant_scoped(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    if not CARD.get("drift"):
        pytest.fail(f"{PACKAGE} has no drift profile: run `make models`")
    vigil, bystander = create_tenant("vigil"), create_tenant("bystander")
    with WebhookReceiver() as hook, WebhookReceiver() as their_hook:
        for api, receiver in ((vigil, hook), (bystander, their_hook)):
            # No eventTypes: the default is the job events and the model events.
            answer = api.post("/v1/subscriptions", json={"endpointUrl": receiver.url})
            assert answer.status_code == 201, answer.text
        rows = held_out()

        clean = finished(vigil, hook, "clean.jsonl", jsonl(rows), events=1)
        assert_drift_section(clean["drift"], "ok", len(rows))
        assert clean["drift"]["prediction"]["drifted"] is False
        assert drift_events(hook, clean["jobId"]) == []

        shifted = {}
        for name, shift in (("scaled", scaled), ("shuffled", shuffled)):
            job = finished(vigil, hook, f"{name}.jsonl", jsonl(shift(rows)), events=2)
            assert_drift_section(job["drift"], "drifted", len(rows))
            assert job["drift"]["share"] >= 0.5
            [event] = drift_events(hook, job["jobId"])
            assert event["subject"] == f"/tenants/vigil/models/{MODEL}"
            assert event["data"]["model"] == {"name": MODEL, "version": CARD["version"]}
            assert event["data"]["drift"] == job["drift"]  # the figures, as the job shows them
            # Published after the job's own event (Event Grid, like the local broker, does not keep delivery order).
            [terminal] = [
                e for e in hook.events if e["eventType"].startswith("AIaaS.Job.") and e["data"]["jobId"] == job["jobId"]
            ]
            assert event["eventTime"] >= terminal["eventTime"] and event["id"] != terminal["id"]
            shifted[name] = job

        # The same scaled rows, each padded past the stack's 256 KiB shard size: several shards, one verdict.
        padded = [dict(row, note="x" * 5000) for row in scaled(rows)]
        big = finished(vigil, hook, "scaled-big.jsonl", jsonl(padded), events=2)
        assert big["shards"]["count"] >= 3
        assert_drift_section(big["drift"], "drifted", len(rows))
        one = shifted["scaled"]["drift"]
        for mine, theirs in zip(big["drift"]["features"], one["features"], strict=True):
            assert (mine["name"], mine["drifted"]) == (theirs["name"], theirs["drifted"])
            assert mine["value"] == pytest.approx(theirs["value"], rel=1e-6, abs=1e-12)
        assert big["drift"]["prediction"] == one["prediction"]
        assert big["drift"]["share"] == one["share"]

        # Over time: the tenant's jobs of the model, newest first, with their verdicts.
        answer = vigil.get(f"/v1/models/{MODEL}/drift").raise_for_status().json()
        listed = [(item["jobId"], item["drift"]["status"]) for item in answer["items"]]
        assert listed == [
            (big["jobId"], "drifted"),
            (shifted["shuffled"]["jobId"], "drifted"),
            (shifted["scaled"]["jobId"], "drifted"),
            (clean["jobId"], "ok"),
        ]
        assert answer["items"][-1]["drift"] == clean["drift"] and answer["items"][-1]["completedAt"]
        page = vigil.get(f"/v1/models/{MODEL}/drift", params={"limit": 3}).raise_for_status().json()
        rest = vigil.get(
            f"/v1/models/{MODEL}/drift", params={"limit": 3, "continuationToken": page["continuationToken"]}
        ).json()
        assert [i["jobId"] for i in page["items"] + rest["items"]] == [job_id for job_id, _ in listed]
        assert (
            vigil.get(f"/v1/models/{MODEL}/drift", params={"from": "2020-01-01", "to": "2020-01-31"}).json()["items"]
            == []
        )
        bad = vigil.get(f"/v1/models/{MODEL}/drift", params={"from": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["code"]
        unknown = vigil.get("/v1/models/no-such-model/drift")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "UnknownModel"

        # Another tenant sees none of it: no events, no listing, not the jobs.
        assert bystander.get(f"/v1/models/{MODEL}/drift").raise_for_status().json()["items"] == []
        assert bystander.get(f"/v1/jobs/{big['jobId']}").status_code == 404
        assert their_hook.events == []
        assert httpx.get(f"{stack.api_url}/v1/models/{MODEL}/drift").status_code == 401
