"""Retraining closes the loop on the local stack: a tenant's own breast-cancer model gets a job of shifted (scaled)
labelled rows, the job drifts, the drift retrains the model on those rows with its own builder, the new version
enters as a canary, and the gates promote it on the next shifted jobs; a tenant's labelled upload retrains too."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shared.bootstrap import get_platform
from shared.localhost.host import LocalHost
from tests.e2e._api import upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "build/models/breast-cancer-classifier/1"
MODEL, TENANT = "bc-retrained", "retrainer"


def shifted_rows(factor: float, *, seed: int = 0) -> bytes:
    """Every breast-cancer row with its features scaled (the drift) and its true label under "diagnosis"; `seed`
    orders them differently, so each job's file (and so its job id) is another."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    order = np.random.default_rng(seed).permutation(len(data.target))
    names = [str(n) for n in data.feature_names]
    lines = []
    for i in order:
        record: dict[str, Any] = {n: float(v) * factor for n, v in zip(names, data.data[i], strict=True)}
        record["diagnosis"] = ["malignant", "benign"][int(data.target[i])]
        lines.append(orjson.dumps(record))
    return b"\n".join(lines) + b"\n"


def run_job(api: httpx.Client, content: bytes) -> dict[str, Any]:
    path = f"data/{uuid.uuid4().hex}.jsonl"
    get_platform().blobs.write_bytes(f"tenant-{TENANT}", path, content)
    answer = api.post("/v1/jobs", json={"model": MODEL, "blobPath": path})
    assert answer.status_code == 202, answer.text
    return wait(lambda: _ended(api, answer.json()["jobId"]), what="the job's end")


def _ended(api: httpx.Client, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
    return None if job["status"] in ("queued", "running") else job


def wait(probe: Callable[[], Any], *, what: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


def finished_run(api: httpx.Client, count: int) -> dict[str, Any] | None:
    runs = api.get(f"/v1/models/{MODEL}/retraining").raise_for_status().json()["runs"]
    ended = [r for r in runs if r["status"] in ("succeeded", "failed")]
    return ended[0] if len(ended) >= count else None


def test_drift_retrains_the_model_and_the_gates_promote_the_new_version(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant(TENANT)
    card = json.loads((SOURCE / "card.json").read_text())
    card.update(name=MODEL, version="1")
    body = {
        "card": card,
        "artifactBase64": base64.b64encode((SOURCE / "model.onnx").read_bytes()).decode(),
        "files": {f["file"]: base64.b64encode((SOURCE / f["file"]).read_bytes()).decode() for f in card["files"]},
    }
    assert api.post("/v1/models", json=body).status_code == 201
    policy = {
        "onDrift": True,
        "labelField": "diagnosis",
        # Nearly every job on the canary; promoted after one job of 500 records with no error and no drift.
        "canary": {
            "percent": 99,
            "gates": {"maxErrorRate": 0.0, "noDrift": True},
            "evidence": {"jobs": 1, "records": 500},
        },
    }
    answer = api.put(f"/v1/models/{MODEL}/retraining", json=policy)
    assert answer.status_code == 200, answer.text

    drifted = run_job(api, shifted_rows(1.6))
    assert drifted["status"] == "succeeded" and drifted["drift"]["status"] == "drifted", drifted
    run = wait(lambda: finished_run(api, 1), what="retraining run")
    assert run["status"] == "succeeded", run
    assert (run["trigger"], run["jobId"], run["parentVersion"], run["version"]) == ("drift", drifted["jobId"], "1", "2")
    assert run["metrics"]["accuracy"] > 0.9
    assert run["trainer"] == {"local": {"builder": "breast_cancer", "rows": 569}}
    # Registered by the worker that finalised the job: the API's catalogue sees it within its 5 s cache.
    view = wait(lambda: (v := api.get(f"/v1/models/{MODEL}").json())["versions"] == ["1", "2"] and v, what="version 2")
    assert view["aliases"]["production"] == "1"
    aliases = api.get(f"/v1/models/{MODEL}/aliases").json()
    rollout = aliases["rollouts"]["production"]
    assert rollout["canary"]["version"] == "2" and rollout["stableVersion"] == "1"
    assert aliases["history"][-1]["by"] == f"retraining:{run['id']}"

    seed = 1
    while api.get(f"/v1/models/{MODEL}/aliases").json()["aliases"]["production"] != "2":
        job = run_job(api, shifted_rows(1.6, seed=seed))
        assert job["status"] == "succeeded", job
        if job["rollout"]["arm"] == "canary":
            # The retrained version knows the shifted rows: no drift against its own profile, and it is right.
            assert job["model"]["version"] == "2" and job["drift"]["status"] == "ok", job["drift"]
            wait(
                lambda: api.get(f"/v1/models/{MODEL}/aliases").json()["aliases"]["production"] == "2", what="promotion"
            )
        seed += 1
        assert seed < 6, "the canary was not promoted"
    view = api.get(f"/v1/models/{MODEL}/aliases").json()
    promoted = view["history"][-1]
    assert promoted["rollout"] == "promoted" and promoted["from"] == "1" and promoted["to"] == "2"
    assert promoted["figures"]["canary"]["errorRate"] == 0.0 and promoted["figures"]["canary"]["driftedJobs"] == 0
    [event] = api.get("/v1/events", params={"type": "AIaaS.Model.Promoted"}).json()["items"]
    assert event["subject"] == f"/tenants/{TENANT}/models/{MODEL}"

    # The new version's card carries its lineage: the drifted job's own input, by ETag and sha256.
    lineage = api.get(f"/v1/models/{MODEL}").json()["card"]["lineage"]
    assert lineage["parentVersion"] == "1" and lineage["trigger"] == "drift" and lineage["jobId"] == drifted["jobId"]
    assert lineage["data"]["blobPath"].startswith("data/") and lineage["data"]["etag"]
    assert len(lineage["data"]["sha256"]) == 64 and lineage["metrics"] == run["metrics"]

    # A tenant's upload of newly labelled rows (through its upload URL, as any file) retrains on request: version 3,
    # as the canary of version 2. Drift no longer retrains (the policy says so), so this run is the request's.
    policy["onDrift"] = False
    assert api.put(f"/v1/models/{MODEL}/retraining", json=policy).status_code == 200
    path = upload(api, MODEL, "labelled.jsonl", shifted_rows(1.7))
    answer = api.post(f"/v1/models/{MODEL}/retrain", json={"blobPath": path})
    assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
    run = wait(lambda: finished_run(api, 2), what="second retraining run")
    assert run["status"] == "succeeded" and run["trigger"] == "labelledData" and run["version"] == "3", run
    rollout = api.get(f"/v1/models/{MODEL}/aliases").json()["rollouts"]["production"]
    assert rollout["canary"]["version"] == "3" and rollout["stableVersion"] == "2"
