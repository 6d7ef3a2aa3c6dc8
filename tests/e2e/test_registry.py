"""The model registry on the local stack: promoting and rolling back an alias changes the version new jobs run
(and say so); a tenant's private model is invisible and unusable for every other tenant, and served online by a
sandbox child of the API's process; a remote model's credential is kept in the secret store, in no blob."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobClient

from shared.bootstrap import build_platform_blobs, get_platform
from shared.inference.registry import BlobModelRegistry
from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "build/models/breast-cancer-classifier/1"
ROWS = b"".join((REPO / "build/samples/breast-cancer.jsonl").read_bytes().splitlines(keepends=True)[:5])


def aiaas(stack: LocalHost, *argv: str) -> str:
    """The real operator CLI, as a separate process against the stack."""
    done = subprocess.run(
        [str(REPO / ".venv/bin/aiaas"), *argv],
        env={**os.environ, **stack.environment()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def package(root: Path, name: str, version: str, description: str) -> Path:
    """The breast-cancer package under another name and version (same artifact bytes, changed card)."""
    target = root / name / version
    target.mkdir(parents=True)
    shutil.copyfile(SOURCE / "model.onnx", target / "model.onnx")
    card = json.loads((SOURCE / "card.json").read_text())
    for entry in card.get("files", []):  # the drift profile.json
        shutil.copyfile(SOURCE / entry["file"], target / entry["file"])
    card.update(name=name, version=version, description=description)
    (target / "card.json").write_text(json.dumps(card))
    return target


def upload(api: httpx.Client, model: str, filename: str) -> str:
    answer = api.post("/v1/uploads", json={"model": model, "filename": filename})
    assert answer.status_code == 201, answer.text
    BlobClient.from_blob_url(answer.json()["uploadUrl"]).upload_blob(ROWS)
    return answer.json()["blobPath"]  # type: ignore[no-any-return]


def subscribe(api: httpx.Client, hook: WebhookReceiver) -> None:
    answer = api.post("/v1/subscriptions", json={"endpointUrl": hook.url})
    assert answer.status_code == 201, answer.text


def test_promote_and_roll_back_change_the_version_new_jobs_run(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client], tmp_path: Path
) -> None:
    model = "bc-rollout"
    for version, description in (("1", "first"), ("2", "second: same weights, new card")):
        out = aiaas(stack, "models", "register", "--package", str(package(tmp_path, model, version, description)))
        assert f"{model}@{version} registered" in out
    tenant = create_tenant("rollout")
    assert tenant.get(f"/v1/models/{model}").json()["aliases"] == {"production": "1"}

    def run_job(filename: str) -> dict[str, Any]:
        with WebhookReceiver() as hook:
            subscribe(tenant, hook)
            upload(tenant, model, filename)
            [event] = hook.wait_for(1, timeout=60)
        for sub in tenant.get("/v1/subscriptions").json()["items"]:
            tenant.delete(f"/v1/subscriptions/{sub['subscriptionId']}")
        assert event["eventType"] == "AIaaS.Job.Succeeded", event
        return event["data"]  # type: ignore[no-any-return]

    assert "production 1 -> 2 by release-bot" in aiaas(
        stack, "models", "promote", model, "production", "2", "--by", "release-bot"
    )
    promoted = run_job("after-promotion.jsonl")
    assert promoted["model"] == {"name": model, "version": "2"}
    job = tenant.get(f"/v1/jobs/{promoted['jobId']}").json()
    assert job["model"]["version"] == "2" and job["counts"]["succeeded"] == 5

    aiaas(stack, "models", "promote", model, "production", "1", "--by", "release-bot")  # the rollback
    rolled_back = run_job("after-rollback.jsonl")
    assert rolled_back["model"] == {"name": model, "version": "1"}
    assert tenant.get(f"/v1/jobs/{rolled_back['jobId']}").json()["model"]["version"] == "1"

    history = tenant.get(f"/v1/models/{model}/aliases").json()["history"]
    assert [(h["from"], h["to"], h["by"]) for h in history][-2:] == [
        ("1", "2", "release-bot"),
        ("2", "1", "release-bot"),
    ]
    shown = json.loads(aiaas(stack, "models", "show", model))
    assert shown["defaultVersion"] == "1" and len(shown["aliasHistory"]) == 3


def test_a_private_model_is_its_owners_alone(stack: LocalHost, create_tenant: Callable[[str], httpx.Client]) -> None:
    owner, stranger = create_tenant("privy"), create_tenant("nosy")
    card = json.loads((SOURCE / "card.json").read_text())
    card.update(name="privy-cancer", version="1", description="privy's own copy")
    body = {"card": card, "artifactBase64": base64.b64encode((SOURCE / "model.onnx").read_bytes()).decode()}
    body["files"] = {f["file"]: base64.b64encode((SOURCE / f["file"]).read_bytes()).decode() for f in card["files"]}
    answer = owner.post("/v1/models", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["visibility"] == "private"

    assert "privy-cancer" in [m["name"] for m in owner.get("/v1/models").json()["items"]]
    assert "privy-cancer" not in [m["name"] for m in stranger.get("/v1/models").json()["items"]]
    for call in (
        lambda: stranger.get("/v1/models/privy-cancer"),
        lambda: stranger.get("/v1/models/privy-cancer/aliases"),
        lambda: stranger.post("/v1/uploads", json={"model": "privy-cancer", "filename": "rows.jsonl"}),
        lambda: stranger.put("/v1/models/privy-cancer/aliases/production", json={"version": "1"}),
    ):
        refused = call()
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "UnknownModel", refused.text
    get_platform().blobs.write_bytes("tenant-nosy", "data/rows.jsonl", ROWS)
    refused = stranger.post("/v1/jobs", json={"model": "privy-cancer", "blobPath": "data/rows.jsonl"})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "UnknownModel"

    with WebhookReceiver() as hook:
        subscribe(stranger, hook)
        get_platform().blobs.write_bytes("tenant-nosy", "inbox/privy-cancer/sneaky.jsonl", ROWS)
        [rejected] = hook.wait_for(1, timeout=60)
    assert rejected["eventType"] == "AIaaS.Job.Rejected" and rejected["data"]["error"]["code"] == "UnknownModel"

    with WebhookReceiver() as hook:
        subscribe(owner, hook)
        upload(owner, "privy-cancer", "rows.jsonl")
        [event] = hook.wait_for(1, timeout=60)
    assert event["eventType"] == "AIaaS.Job.Succeeded"
    assert event["data"]["model"] == {"name": "privy-cancer", "version": "1"}
    assert event["data"]["counts"]["succeeded"] == 5


def infer(client: httpx.Client, model: str, rows: list[list[float]]) -> httpx.Response:
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}]}
    return client.post(f"/v2/models/{model}/infer", json=body)


def test_a_private_model_is_served_online_by_a_sandbox_that_may_die(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    owner = create_tenant("boxed")
    card = json.loads((SOURCE / "card.json").read_text())
    card.update(name="boxed-cancer", version="1", description="boxed's own copy")
    body = {"card": card, "artifactBase64": base64.b64encode((SOURCE / "model.onnx").read_bytes()).decode()}
    body["files"] = {f["file"]: base64.b64encode((SOURCE / f["file"]).read_bytes()).decode() for f in card["files"]}
    assert owner.post("/v1/models", json=body).status_code == 201
    rows = [[1.0] * len(card["features"]), [0.5] * len(card["features"])]

    answer = infer(owner, "boxed-cancer", rows)
    assert answer.status_code == 200, answer.text
    registry = get_platform().models
    assert isinstance(registry, BlobModelRegistry)
    pid = registry.sandboxes.pid(("boxed", "boxed-cancer", "1"))
    assert pid is not None and pid != os.getpid()
    # A child of the API's process, and not its worker: ONNX Runtime maps the model there, not here.
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
    assert "boxed-cancer@1" not in registry.loaded()

    os.kill(pid, signal.SIGKILL)
    again = infer(owner, "boxed-cancer", rows)
    assert again.status_code == 200, again.text
    assert again.json()["outputs"] == answer.json()["outputs"]
    assert registry.sandboxes.pid(("boxed", "boxed-cancer", "1")) not in (None, pid)
    assert owner.get("/health").status_code == 200  # the API carried on throughout
    registry.close()


def test_a_remote_models_credential_is_in_the_local_secret_store_and_in_no_blob(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    owner = create_tenant("keyed")
    card = {
        "name": "keyed-remote",
        "version": "1",
        "task": "tabular-classification",
        "handler": "tabular-classifier",
        "runtime": "remote-oip",
        "endpoint": "https://127.0.0.1:9/v2/models/m",
        "inputTypes": [".jsonl"],
        "features": ["a", "b"],
        "labels": ["no", "yes"],
        "auth": {"type": "bearer"},
    }
    answer = owner.post("/v1/models", json={"card": card, "credential": "e2e-s3cr3t-token"})
    assert answer.status_code == 201, answer.text
    assert "s3cr3t" not in answer.text
    assert "s3cr3t" not in owner.get("/v1/models/keyed-remote").text
    assert "s3cr3t" not in owner.get("/v1/models").text

    platform = get_platform()
    settings = stack.settings
    for blob in platform.blobs.list_blobs("tenant-keyed"):
        assert b"s3cr3t" not in platform.blobs.read_bytes("tenant-keyed", blob.name), blob.name
    models_blobs = build_platform_blobs(settings)  # the platform's own account, where models live
    for blob in models_blobs.list_blobs(settings.models_container):
        assert b"s3cr3t" not in models_blobs.read_bytes(settings.models_container, blob.name), blob.name
    stored = [p for p in (Path(settings.data_dir) / "secrets").iterdir() if p.name.startswith("t5-keyed-")]
    assert [p.read_text() for p in stored] == ["e2e-s3cr3t-token"]
    assert stat.S_IMODE(stored[0].stat().st_mode) == 0o600
