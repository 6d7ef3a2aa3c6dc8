"""Rollouts on the local stack with real versions: a tenant's good canary is promoted by its evidence, a broken one
(its labels inverted) is rolled back at its first job, each decision with its figures in the alias history, the
audit log and the event log; an operator shadows a public model with `aiaas models rollout`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bootstrap import get_platform
from shared.localhost.host import LocalHost
from shared.services.rollouts import arm_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "build/models/breast-cancer-classifier/1"
ROWS = b"".join((REPO / "build/samples/breast-cancer.jsonl").read_bytes().splitlines(keepends=True)[:5])


def version_body(name: str, version: str, *, inverted: bool = False) -> dict[str, Any]:
    """The breast-cancer package as the tenant's own model: the same weights; `inverted` swaps its labels (a
    broken version: every answer the wrong way round)."""
    card = json.loads((SOURCE / "card.json").read_text())
    card.update(name=name, version=version, description=f"{name} {version}")
    if inverted:
        card["labels"] = list(reversed(card["labels"]))
    files = {f["file"]: base64.b64encode((SOURCE / f["file"]).read_bytes()).decode() for f in card.get("files") or []}
    return {
        "card": card,
        "artifactBase64": base64.b64encode((SOURCE / "model.onnx").read_bytes()).decode(),
        "files": files,
    }


def run_job(api: httpx.Client, tenant: str, model: str) -> dict[str, Any]:
    """A job over 5 rows through POST /v1/jobs, waited for to its end."""
    path = f"data/{uuid.uuid4().hex}.jsonl"
    get_platform().blobs.write_bytes(f"tenant-{tenant}", path, ROWS)
    answer = api.post("/v1/jobs", json={"model": model, "blobPath": path})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["jobId"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")


def wait_for_aliases(api: httpx.Client, model: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The decision is made right after the job's end is written: a moment later than the job's status."""
    deadline = time.monotonic() + 30
    while True:
        view: dict[str, Any] = api.get(f"/v1/models/{model}/aliases").json()
        if done(view) or time.monotonic() > deadline:
            return view
        time.sleep(0.2)


def test_a_good_canary_is_promoted_and_an_inverted_one_rolled_back(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    model, api = "roll-cancer", create_tenant("roller")
    for version, inverted in (("1", False), ("2", False), ("3", True)):
        answer = api.post("/v1/models", json=version_body(model, version, inverted=inverted))
        assert answer.status_code == 201, answer.text

    bad = api.put(f"/v1/models/{model}/aliases/production", json={"canary": {"version": "2", "percent": 100}})
    assert bad.status_code == 400, bad.text
    good = {
        "version": "2",
        "percent": 60,
        "gates": {"minAgreement": 0.95, "maxErrorRate": 0.05},
        "evidence": {"jobs": 2, "records": 10},
    }
    started = api.put(f"/v1/models/{model}/aliases/production", json={"canary": good})
    assert started.status_code == 200, started.text
    rollout = started.json()["rollouts"]["production"]
    assert rollout["stableVersion"] == "1" and rollout["canary"]["percent"] == 60
    assert rollout["status"]["decision"] is None

    arms: list[str] = []
    canary_ids: list[str] = []
    for _ in range(20):
        job = run_job(api, "roller", model)
        assert job["status"] == "succeeded", job
        arm = arm_for(job["jobId"], 60)  # by the job's id alone, as documented
        assert job["rollout"]["arm"] == arm and job["model"]["version"] == ("2" if arm == "canary" else "1")
        arms.append(arm)
        if arm == "canary":
            canary_ids.append(job["jobId"])
        if arms.count("canary") == 2:
            break
    view = wait_for_aliases(api, model, lambda v: v["aliases"]["production"] == "2")
    assert view["aliases"]["production"] == "2", view
    promoted = view["history"][-1]
    assert promoted["rollout"] == "promoted" and promoted["by"] == "platform:rollouts"
    assert promoted["decidedBy"] == canary_ids[-1]  # the tenant's own job whose figures tipped it
    canary_figures = promoted["figures"]["canary"]
    assert canary_figures["jobs"] == 2 and canary_figures["records"] == 10 and canary_figures["agreement"] == 1.0
    assert canary_figures["errorRate"] == 0.0 and canary_figures["secondsPerRecord"] > 0
    assert promoted["figures"]["stable"]["jobs"] == arms.count("stable")

    broken = {"version": "3", "percent": 99, "gates": {"minAgreement": 0.9}, "evidence": {"jobs": 10}}
    assert api.put(f"/v1/models/{model}/aliases/production", json={"canary": broken}).status_code == 200
    job = run_job(api, "roller", model)
    while job["rollout"]["arm"] != "canary":  # one job in a hundred stays on the stable version
        job = run_job(api, "roller", model)
    assert job["model"]["version"] == "3" and job["rollout"]["stableVersion"] == "2"
    view = wait_for_aliases(api, model, lambda v: not v["rollouts"])
    assert view["aliases"]["production"] == "2" and view["rollouts"] == {}, view
    rolled_back = view["history"][-1]
    assert rolled_back["rollout"] == "rolledBack" and rolled_back["canaryVersion"] == "3"
    [gate] = rolled_back["gates"]
    assert gate["name"] == "minAgreement" and gate["status"] == "failed" and gate["value"] < 0.5
    assert rolled_back["evidence"]["jobs"] == {"needed": 10, "observed": 1}  # at once, not after the evidence
    assert run_job(api, "roller", model)["model"]["version"] == "2"

    events = {
        kind: api.get("/v1/events", params={"type": f"AIaaS.Model.{kind}"}).json()["items"]
        for kind in ("Promoted", "RolledBack")
    }
    [promoted_event], [rolled_back_event] = events["Promoted"], events["RolledBack"]
    assert promoted_event["subject"] == f"/tenants/roller/models/{model}"
    assert promoted_event["data"]["figures"]["canary"]["agreement"] == 1.0
    assert promoted_event["data"]["from"] == "1" and promoted_event["data"]["to"] == "2"
    assert rolled_back_event["data"]["gates"][0]["value"] == gate["value"]
    audit = {
        action: api.get("/v1/audit", params={"action": action}).json()["items"]
        for action in ("models.rollout.promote", "models.rollout.rollback")
    }
    [promote_entry], [rollback_entry] = audit["models.rollout.promote"], audit["models.rollout.rollback"]
    assert promote_entry["actor"] == {"kind": "operator", "id": "platform:rollouts"}
    assert promote_entry["target"] == f"models/{model}/aliases/production"
    assert promote_entry["details"]["figures"]["canary"]["records"] == 10
    assert rollback_entry["details"]["gates"][0]["status"] == "failed"


def test_an_operator_shadows_a_public_model_with_the_cli(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client], tmp_path: Path
) -> None:
    model = "bc-shadowed"
    for version in ("1", "2"):
        target = tmp_path / version
        shutil.copytree(SOURCE, target)
        card = json.loads((target / "card.json").read_text())
        card.update(name=model, version=version)
        (target / "card.json").write_text(json.dumps(card))
        aiaas(stack, "models", "register", "--package", str(target))
    shown = json.loads(aiaas(stack, "models", "rollout", model, "--shadow-version", "2", "--json"))
    assert shown["version"] == "1" and shown["rollout"]["shadow"]["version"] == "2"

    api = create_tenant("shadowed")
    job = run_job(api, "shadowed", model)
    assert job["model"]["version"] == "1" and job["rollout"]["compareWith"] == "2"
    results = api.get(f"/v1/jobs/{job['jobId']}/results").json()["items"]
    assert len(results) == 5  # version 1's results only: the shadow's outputs are never stored
    view = wait_for_aliases(api, model, lambda v: v["rollouts"]["production"]["shadow"]["figures"]["jobs"] == 1)
    figures = view["rollouts"]["production"]["shadow"]["figures"]
    assert figures["compared"] == 5 and figures["agreement"] == 1.0
    shown = json.loads(aiaas(stack, "models", "show", model))
    assert shown["rollouts"]["production"]["shadow"]["figures"] == figures  # what the operator follows
    ended = json.loads(aiaas(stack, "models", "rollout", model, "--end", "--json"))
    assert ended["rollout"] is None and ended["version"] == "1"


def aiaas(stack: LocalHost, *argv: str) -> str:
    done = subprocess.run(
        [str(REPO / ".venv/bin/aiaas"), *argv],
        env={**os.environ, **stack.environment()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
