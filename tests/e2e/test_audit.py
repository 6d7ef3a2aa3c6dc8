"""The audit log through HTTP against the local stack: one entry per state change and refused authentication,
readable by the tenant's admins only, never changed or deleted through any API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fakes import MODEL_NAME

pytestmark = pytest.mark.e2e


def entries(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = api.get("/v1/audit", params={"limit": 500, **params})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def test_state_changes_and_refusals_are_entries_with_their_request_id(
    create_tenant: Callable[[str], httpx.Client],
) -> None:
    tenant = f"audit-{uuid.uuid4().hex[:6]}"
    api = create_tenant(tenant)
    created = api.post("/v1/uploads", json={"model": MODEL_NAME, "filename": "a.jsonl"})
    failed = api.post("/v1/jobs", json={"model": MODEL_NAME, "blobPath": f"inbox/{MODEL_NAME}/missing.jsonl"})
    read = api.get("/v1/jobs")
    key_id = api.get("/v1/keys").json()["items"][0]["id"]
    refused = api.post(
        "/v1/jobs",
        json={},
        headers={"Authorization": f"Bearer aiaas_{tenant}.{key_id}.{'B' * 43}", "X-Forwarded-For": "2001:db8:a::1"},
    )
    assert (created.status_code, refused.status_code, read.status_code) == (201, 401, 200)
    assert failed.status_code >= 400

    log = {e["requestId"]: e for e in entries(api)}

    assert read.headers["x-request-id"] not in log  # a read changes nothing
    for response, action, outcome, actor_kind in (
        (created, "uploads.create", "succeeded", "key"),
        (failed, "jobs.submit", "failed", "key"),
        (refused, "jobs.submit", "denied", "key"),
    ):
        entry = log[response.headers["x-request-id"]]
        assert (entry["action"], entry["outcome"], entry["actor"]["kind"]) == (action, outcome, actor_kind)
        assert entry["statusCode"] == response.status_code and entry["target"] == response.request.url.path
        assert entry["actor"]["id"] == key_id and entry["time"]
    operator = [e for e in log.values() if e["action"] == "tenants.create"]
    assert len(operator) == 1 and operator[0]["actor"]["kind"] == "operator"
    assert [e["action"] for e in entries(api, action="uploads.create")] == ["uploads.create"]


def test_no_api_changes_or_deletes_an_entry_and_no_other_tenant_reads_them(
    create_tenant: Callable[[str], httpx.Client],
) -> None:
    api = create_tenant(f"audit-{uuid.uuid4().hex[:6]}")
    other = create_tenant(f"audit-{uuid.uuid4().hex[:6]}")
    api.post("/v1/keys", json={"name": "one", "role": "AIaaS.Reader"}).raise_for_status()
    before = entries(api)
    first = before[0]["id"]

    answers = [
        api.request(method, path, json={"outcome": "succeeded"})
        for method in ("PUT", "PATCH", "DELETE", "POST")
        for path in ("/v1/audit", f"/v1/audit/{first}", f"/v1/audit?id={first}")
    ]

    assert {r.status_code for r in answers} <= {404, 405}, [(r.request.method, r.status_code) for r in answers]
    assert entries(api) == before
    mine = {e["requestId"] for e in before}
    assert not mine & {e["requestId"] for e in entries(other)}
