"""A tenant attacks storage as an attacker would: copies through its own upload SAS URL, paths out of its container."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bootstrap import build_platform_blobs
from shared.config import get_settings
from shared.localhost.host import LocalHost
from tests.e2e._api import upload
from tests.unit.test_registry import tiny_card, tiny_onnx

pytestmark = pytest.mark.e2e
MODEL = "breast-cancer-classifier"
REPO = Path(__file__).resolve().parents[2]
# One real record of the model's samples, under an id the attacker must never see.
_SAMPLE = json.loads((REPO / "build/samples/breast-cancer.jsonl").read_bytes().splitlines()[0])
ROW = json.dumps({**_SAMPLE, "id": "secret-row"}).encode() + b"\n"
# A version Azure accepts for Copy Blob with a destination SAS and a source URL (2013-08-15 and later).
STORAGE_VERSION = "2021-08-06"


def _jobs(api: httpx.Client) -> list[dict[str, Any]]:
    return list(api.get("/v1/jobs", params={"limit": 200}).raise_for_status().json()["items"])


def _wait_for_jobs(api: httpx.Client, count: int, timeout: float = 90) -> list[dict[str, Any]]:
    """Polls the tenant's jobs until `count` of them are terminal (the watcher admits uploads within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = _jobs(api)
        done = [j for j in jobs if j["status"] not in {"queued", "running"}]
        if len(done) >= count or time.monotonic() > deadline:
            return jobs
        time.sleep(0.3)


def _upload_url(api: httpx.Client, filename: str = "copy.jsonl") -> dict[str, Any]:
    answer = api.post("/v1/uploads", json={"model": MODEL, "filename": filename})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _copy_through_sas(upload_url: str, source_url: str, *, sync: bool = False) -> httpx.Response:
    """Copy Blob (or Copy Blob From URL, `sync`) with the tenant's SAS as the destination's only credential."""
    headers = {"x-ms-copy-source": source_url, "x-ms-version": STORAGE_VERSION}
    if sync:
        headers["x-ms-requires-sync"] = "true"
    return httpx.put(upload_url, headers=headers, timeout=30)


def test_a_copy_of_another_tenants_upload_through_a_sas_never_becomes_a_job(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    victim, attacker = create_tenant("copy-victim"), create_tenant("copy-attacker")
    victim_path = upload(victim, MODEL, "rows.jsonl", ROW)
    assert [j["status"] for j in _wait_for_jobs(victim, 1)] == ["succeeded"]
    source = f"{stack.azurite.blob_endpoint}/tenant-copy-victim/{victim_path}"

    outcomes = []
    for sync in (False, True):
        target = _upload_url(attacker, f"copy-{int(sync)}.jsonl")
        answer = _copy_through_sas(target["uploadUrl"], source, sync=sync)
        outcomes.append(answer.status_code)
        if answer.status_code >= 400:  # storage refused it, as Azure does (the source needs its own authorization)
            assert answer.headers.get("x-ms-error-code") in {"CannotVerifyCopySource", "AuthorizationFailure"}
    copied = sum(1 for status in outcomes if status < 300)

    jobs = _wait_for_jobs(attacker, copied)
    assert len(jobs) == copied  # Azurite accepts a same-account copy (Azure would not): each became one job
    for job in jobs:
        assert job["status"] == "rejected", job
        assert job["error"]["code"] == "CopiedBlobRefused"
        assert job["counts"]["records"] == 0
        results = attacker.get(f"/v1/jobs/{job['jobId']}/results").raise_for_status().json()
        assert results["items"] == []
    assert "secret-row" not in str(jobs)


def test_a_private_model_cannot_be_copied_out_and_registered_as_the_attackers(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    owner, attacker = create_tenant("model-owner"), create_tenant("model-thief")
    card = tiny_card("owners-secret-model")
    registered = owner.post("/v1/models", json={"card": card, "artifactBase64": base64.b64encode(tiny_onnx()).decode()})
    assert registered.status_code == 201, registered.text
    platform_blobs = build_platform_blobs(get_settings())
    artifacts = [
        blob.name
        for blob in platform_blobs.list_blobs("models", prefix="tenants/model-owner/")
        if blob.name.endswith(".onnx")
    ]
    assert artifacts, "the owner's artifact is in the platform's models container"
    tenants_account = stack.azurite.blob_endpoint
    platform_account = tenants_account.replace("/devstoreaccount1", "/aiaasplatform")

    stolen = []
    for account in (tenants_account, platform_account):
        target = _upload_url(attacker, "model.jsonl")
        answer = _copy_through_sas(target["uploadUrl"], f"{account}/models/{artifacts[0]}")
        if answer.status_code < 300:
            stolen.append(target["blobPath"])
        else:
            assert answer.status_code in {403, 404}, answer.text
    for blob_path in stolen:  # what the copy wrote is never registered
        body = {"card": tiny_card("now-mine"), "artifactBlobPath": blob_path}
        answer = attacker.post("/v1/models", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "CopiedBlobRefused"
    names = [m["name"] for m in attacker.get("/v1/models").raise_for_status().json()["items"]]
    assert "now-mine" not in names and "owners-secret-model" not in names


TRAVERSALS = [
    "../tenant-path-victim/{victim}",
    "inbox/../../tenant-path-victim/{victim}",
    "%2e%2e/tenant-path-victim/{victim}",
    "..%2ftenant-path-victim%2f{victim}",
    "./{victim}",
    "/tenant-path-victim/{victim}",
    "..\\tenant-path-victim\\{victim}",
    "inbox//{victim}",
]


def test_a_path_out_of_the_callers_container_is_a_400_with_a_reason(
    create_tenant: Callable[[str], httpx.Client],
) -> None:
    victim, attacker = create_tenant("path-victim"), create_tenant("path-attacker")
    victim_path = upload(victim, MODEL, "rows.jsonl", ROW)
    _wait_for_jobs(victim, 1)

    for template in TRAVERSALS:
        path = template.format(victim=victim_path)
        job = attacker.post("/v1/jobs", json={"model": MODEL, "blobPath": path})
        model = attacker.post("/v1/models", json={"card": tiny_card("stolen"), "artifactBlobPath": path})
        for answer in (job, model):
            assert answer.status_code == 400, (path, answer.status_code, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "InvalidBlobPath", (path, error)
            assert "refused: " in error["message"]
    assert _jobs(attacker) == []
    assert "stolen" not in [m["name"] for m in attacker.get("/v1/models").json()["items"]]
