"""BOLA: tenant A calls every route of /api/openapi.json with tenant B's ids; nothing of B's answers or changes."""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import all_results, upload
from tests.unit.test_registry import tiny_card, tiny_onnx

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
PUBLIC_MODEL = "breast-cancer-classifier"
B_MODEL = "bola-private-model"  # holds no "bola-b": A may send this name
B_SECRET = "bola-b-secret-7f3a"  # in B's record id and B's model description: must never reach A
# What A may get back: the contract's "as one that does not exist" (404), a refused input (400), a missing role
# (403); 405 for a method a path does not serve. A 2xx is allowed only when it touches none of B's objects.
REFUSALS = {400, 403, 404, 405}
OIP_BODY = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}


def _wait_terminal(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = dict(api.get(f"/v1/jobs/{job_id}").raise_for_status().json())
        if job["status"] not in {"queued", "running"} or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def _b_objects(b: httpx.Client, hook: WebhookReceiver) -> dict[str, Any]:
    """B's real objects: an upload, its finished job, a subscription, a private model, an extra key if keys exist."""
    sample = json.loads((REPO / "build/samples/breast-cancer.jsonl").read_bytes().splitlines()[0])
    blob_path = upload(b, PUBLIC_MODEL, "rows.jsonl", json.dumps({**sample, "id": B_SECRET}).encode() + b"\n")
    subscription = b.post("/v1/subscriptions", json={"endpointUrl": hook.url})
    assert subscription.status_code == 201, subscription.text
    card = {**tiny_card(B_MODEL), "description": f"B's model {B_SECRET}"}
    model = b.post("/v1/models", json={"card": card, "artifactBase64": base64.b64encode(tiny_onnx()).decode()})
    assert model.status_code == 201, model.text
    deadline = time.monotonic() + 60
    while not (jobs := b.get("/v1/jobs").raise_for_status().json()["items"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert jobs, "B's upload became a job"
    job = _wait_terminal(b, jobs[0]["jobId"])
    assert job["status"] == "succeeded", job
    objects = {
        "blob_path": blob_path,
        "job_id": job["jobId"],
        "subscription_id": subscription.json()["subscriptionId"],
        "model": B_MODEL,
        "key_id": None,
        "key": None,
    }
    keys = b.post("/v1/keys", json={"name": "bola-b-key", "role": "AIaaS.Reader"})
    if keys.status_code == 201:  # the keys API exists (contract: Identity, roles and keys)
        objects["key_id"], objects["key"] = keys.json()["id"], keys.json()["key"]
    return objects


def _snapshot(b: httpx.Client, objects: dict[str, Any]) -> dict[str, Any]:
    """What B sees of its objects; must be the same after A's attempts."""
    job = b.get(f"/v1/jobs/{objects['job_id']}").raise_for_status().json()
    model = b.get(f"/v1/models/{B_MODEL}").raise_for_status().json()
    snapshot = {
        "job": {k: job[k] for k in ("jobId", "status", "counts", "model", "input") if k in job},
        "results": all_results(b, objects["job_id"]),
        "subscription": b.get(f"/v1/subscriptions/{objects['subscription_id']}").raise_for_status().json(),
        "subscriptions": sorted(
            s["subscriptionId"] for s in b.get("/v1/subscriptions").raise_for_status().json()["items"]
        ),
        "model": {k: model.get(k) for k in ("name", "versions", "aliases", "defaultVersion", "visibility")},
        "aliases": b.get(f"/v1/models/{B_MODEL}/aliases").raise_for_status().json(),
        "jobs": sorted(j["jobId"] for j in b.get("/v1/jobs").raise_for_status().json()["items"]),
    }
    if objects["key_id"]:
        snapshot["keys"] = sorted(k["id"] for k in b.get("/v1/keys").raise_for_status().json()["items"])
    return snapshot


def _path_values(name: str, objects: dict[str, Any]) -> list[str]:
    """B's ids for a path parameter, by its name; every id B has for a name the test does not know yet."""
    known = {
        "job_id": [objects["job_id"]],
        "jobid": [objects["job_id"]],
        "subscription_id": [objects["subscription_id"]],
        "subscriptionid": [objects["subscription_id"]],
        "key_id": [objects["key_id"]],
        "keyid": [objects["key_id"]],
        "name": [B_MODEL],
        "model": [B_MODEL],
        "model_name": [B_MODEL],
        "alias": ["production"],
        "version": ["1"],
        "model_version": ["1"],
    }
    ids = [objects[k] for k in ("job_id", "subscription_id", "key_id") if objects[k]] + [B_MODEL]
    return [v for v in known.get(name.lower(), ids) if v]


def _schema(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _bodies(spec: dict[str, Any], operation: dict[str, Any], objects: dict[str, Any], own_hook: str) -> Iterator[Any]:
    """Request bodies that name B's objects in every field that can hold one (one variant per alternative)."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        yield OIP_BODY if operation.get("_method") == "post" else None
        return
    schema = _schema(spec, content.get("schema", {}))
    candidates: dict[str, list[Any]] = {
        "model": [B_MODEL, PUBLIC_MODEL],
        "blobPath": [objects["blob_path"]],
        "artifactBlobPath": [objects["blob_path"]],
        "filename": ["rows.jsonl"],
        "card": [{**tiny_card(B_MODEL, "2"), "description": "A's attempt"}],
        "artifactBase64": [base64.b64encode(tiny_onnx()).decode()],
        "version": ["1"],
        "endpointUrl": [own_hook],  # A's own endpoint: a subscription of A's is A's business
        "name": ["bola-a-key"],
        "role": ["AIaaS.Reader"],
        "eventIds": [[objects["job_id"]]],
        "jobId": [objects["job_id"]],
        "subscriptionId": [objects["subscription_id"]],
        "keyId": [objects["key_id"]],
    }
    fields = {
        name: candidates.get(name, [objects["job_id"]])
        for name in schema.get("properties", {})
        if name in candidates or name in schema.get("required", [])
    }
    if "artifactBlobPath" in fields and "artifactBase64" in fields:  # one or the other, as the contract says
        yield {k: v[0] for k, v in fields.items() if k != "artifactBase64"}
        fields.pop("artifactBlobPath")
    first = {k: v[0] for k, v in fields.items()}
    yield first
    for name, values in fields.items():
        for value in values[1:]:
            yield {**first, name: value}


def _markers(objects: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Strings only B's objects carry: those A never sends, and B's ids, which A sends and may see echoed.

    B's model name is neither: A may own a model of that name too.
    """
    never_sent = [B_SECRET, "bola-b", objects["key"]]
    ids = [objects["blob_path"], objects["job_id"], objects["subscription_id"], objects["key_id"]]
    return [v for v in never_sent if v], [v for v in ids if v]


def test_tenant_a_reaches_nothing_of_tenant_b_through_any_route(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    a, b = create_tenant("bola-a"), create_tenant("bola-b")
    with WebhookReceiver() as b_hook, WebhookReceiver() as a_hook:
        objects = _b_objects(b, b_hook)
        before = _snapshot(b, objects)
        spec = httpx.get(f"{stack.api_url}/openapi.json", timeout=30).raise_for_status().json()
        never_sent, b_ids = _markers(objects)
        sent: set[str] = set()  # B's ids A has named so far: its own audit log and errors may echo them
        tried, problems, a_owns_the_name = 0, [], False
        # Calls on objects first, creations last: A may create its own model of B's model's name (its namespace is
        # its own), after which that name means A's model to A.
        routes = sorted(
            (
                (template, method, operation)
                for template, ops in spec["paths"].items()
                for method, operation in ops.items()
            ),
            key=lambda route: (route[1] == "post" and "{" not in route[0], route[0] == "/api/v1/models"),
        )
        for template, method, operation in routes:
            params = re.findall(r"{([^}]+)}", template)
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            operation = {**operation, "_method": method}
            for values in itertools.product(*[_path_values(p, objects) for p in params]):
                path = template
                for param, value in zip(params, values, strict=True):
                    path = path.replace("{" + param + "}", value)
                for body in _bodies(spec, operation, objects, a_hook.url):
                    tried += 1
                    request = f"{path} {json.dumps(body)}"
                    sent |= {v for v in b_ids if v in request}
                    answer = a.request(method.upper(), stack.api_url.removesuffix("/api") + path, json=body)
                    seen = f"{method.upper()} {path} {body}: {answer.status_code} {answer.text[:300]}"
                    leaked = [m for m in never_sent if m in answer.text]
                    leaked += [m for m in b_ids if m in answer.text and m not in sent]
                    if leaked:
                        problems.append(f"B's {leaked} in {seen}")
                    elif not answer.is_success and answer.status_code not in REFUSALS:
                        problems.append(f"unexpected status: {seen}")
                    elif answer.is_success and any(v in b_ids for v in values):
                        problems.append(f"a 2xx for B's id: {seen}")
                    elif answer.is_success and B_MODEL in values and not a_owns_the_name:
                        problems.append(f"a 2xx for B's model: {seen}")
                    if answer.is_success and method == "post" and template == "/api/v1/models":
                        a_owns_the_name = True  # A registered its own model of that name (not a version of B's)
        assert tried >= len(spec["paths"]), "every route was tried"
        assert problems == [], "\n".join(problems)
        after = _snapshot(b, objects)
    assert after == before, "B's objects are unchanged"
    if objects["key"]:  # B's extra key still works: A could not revoke it
        reader = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {objects['key']}"})
        assert reader.get(f"/v1/jobs/{objects['job_id']}").status_code == 200
