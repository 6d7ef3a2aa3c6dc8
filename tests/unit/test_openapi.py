"""/api/openapi.json describes every answer: typed 2xx bodies, every error status with its body, no 422; real
answers (over the fakes) validate against their declared schemas with no undeclared field."""

from __future__ import annotations

import copy
from typing import Any

import fastapi.routing
import jsonschema
import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.testclient import TestClient
from starlette.responses import Response

from shared.api.app import create_app
from shared.domain.tenants import ADMIN
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.tenants import create_key
from tests.fakes import MODEL_NAME, upload
from tests.unit.test_api import make_job

# The only objects in a 2xx answer without declared properties, each a map whose keys are not the platform's.
FREE_FORM = {
    "ResultItem.output": "a model's output for one record: its keys are the model's (its card's outputSchema)",
    "JobView.parameters": "the model's parameters as the caller sent them (the card's own `parameters`)",
    "JobView.rollout": "which rollout arm ran the job: the rollout's own set-up, as the alias's rollout holds it",
    "ModelCardView.inputSchema": "a JSON Schema of one record, from the model package",
    "ModelCardView.outputSchema": "a JSON Schema of one output, from the model package",
    "ModelCardView.metrics": "the package's own evaluation figures, named by the package",
    "AliasesView.rollouts{}": "a rollout's set-up, evidence and gate verdicts (shared/services/rollouts.py)",
    "CanaryPolicy.gates": "gate name -> threshold, the gates the rollout service defines",
    "AuditItem.details": "what each audited action records: its own fields per action",
    "DeadLetterView.event": "the event as delivered: Event Grid or CloudEvents schema, per subscription",
    "EventGridEvent.data": 'an event\'s payload: its fields differ per event type (CONTRACT "Events")',
    "RetrainingRun.data": "the training data's description, per trainer (blob, version, rows)",
    "RetrainingRun.lineage": "the run's lineage as the trainer records it",
    "RetrainingRun.metrics": "the trained version's evaluation figures, named by the trainer",
    "RetrainingRun.rollout": "the rollout the new version entered (its alias's set-up)",
    "RetrainingRun.trainer": "where it trains: an Azure ML job or the local builder, each with its own fields",
    "InferenceResponse.parameters": "Open Inference Protocol response parameters (free-form in the protocol)",
    "ResponseOutput.parameters": "Open Inference Protocol tensor parameters (free-form in the protocol)",
}
# Answer models that stay open in the strict check: fields past the declared ones are expected there.
OPEN = {
    "ModelCardView": "a model package's card is kept whole; a package may carry fields the platform never reads",
    "DriftColumn": "an embedding column adds its own shift and spread figures, named by its metric",
}
# Routes anyone may call: no credential, so no 401/403/429 to document.
PUBLIC = {"/api/health", "/api/health/ready", "/api/v2", "/api/v2/health/live", "/api/v2/health/ready"}
AUTHED = {"400", "401", "403", "421", "429", "503"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    from tests.fakes import make_platform

    return create_app(make_platform).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    ]


def untyped_objects(document: dict[str, Any], schema: dict[str, Any], where: str, seen: frozenset[str]) -> set[str]:
    """Where, under `schema`, an object has neither properties nor a typed map of values ("Model.field")."""
    components = document["components"]["schemas"]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return set() if name in seen else untyped_objects(document, components[name], name, seen | {name})
    found: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found |= untyped_objects(document, sub, where, seen)
    if schema.get("type") == "array" and "items" in schema:
        found |= untyped_objects(document, schema["items"], f"{where}[]", seen)
    if schema.get("type") == "object" or "properties" in schema:
        values = schema.get("additionalProperties")
        if schema.get("properties"):
            for name, sub in schema["properties"].items():
                found |= untyped_objects(document, sub, f"{where}.{name}", seen)
        elif isinstance(values, dict) and values:
            found |= untyped_objects(document, values, f"{where}{{}}", seen)
        else:
            found.add(where)
    return found


def test_no_2xx_answer_holds_an_untyped_object_but_the_listed_free_form_maps(document: dict[str, Any]) -> None:
    found: dict[str, str] = {}
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if not status.startswith("2") or status == "204":
                continue
            content = response.get("content")
            assert content, f"{method} {path} {status} has no body schema"
            for media_type, body in content.items():
                schema = body.get("schema") or {}
                if media_type == "application/octet-stream":
                    assert schema.get("format") == "binary", (method, path)
                    continue
                assert schema, f"{method} {path} {status} {media_type} has no schema"
                for where in untyped_objects(document, schema, f"{method} {path} {status}", frozenset()):
                    found.setdefault(where, f"{method} {path}")
    untyped = {where: route for where, route in found.items() if where not in FREE_FORM}
    assert not untyped, f"untyped objects in 2xx answers: {untyped}"
    stale = set(FREE_FORM) - set(found)
    assert not stale, f"listed as free-form but no longer in any answer: {stale}"


def test_every_operation_documents_its_error_statuses_with_the_error_body_and_no_422(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        statuses = set(op["responses"])
        assert "422" not in statuses, f"{method} {path} documents a 422 the API never sends"
        if path in PUBLIC:
            continue
        missing = AUTHED - statuses
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            missing |= {"404"} - statuses
        assert not missing, f"{method} {path} does not document {sorted(missing)}"
        body = "V2ErrorBody" if path.startswith("/api/v2") else "ErrorBody"
        for status in statuses:
            if status[0] in "45":
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{body}"}, (method, path, status, schema)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_v2_infer_routes_declare_their_request_body(document: dict[str, Any]) -> None:
    for path in ("/api/v2/models/{name}/infer", "/api/v2/models/{name}/versions/{version}/infer"):
        content = document["paths"][path]["post"]["requestBody"]["content"]
        assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/InferenceRequest"}
        assert "application/octet-stream" in content
    request = document["components"]["schemas"]["InferenceRequest"]
    assert {"id", "parameters", "inputs", "outputs"} <= set(request["properties"])
    assert set(request["required"]) == {"inputs"}


def strict(document: dict[str, Any]) -> dict[str, Any]:
    """The document with no undeclared field allowed in any object that declares its properties (the answer models
    keep undeclared fields rather than drop them: here they fail)."""
    strict_doc = copy.deepcopy(document)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("properties") and node.get("additionalProperties") in (None, True):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for name, schema in strict_doc["components"]["schemas"].items():
        if name not in OPEN:
            visit(schema)
    return strict_doc


def check_answer(document: dict[str, Any], method: str, template: str, response: Any) -> None:
    op = document["paths"][template][method.lower()]
    declared = op["responses"].get(str(response.status_code))
    assert declared, f"{method} {template} answered an undocumented {response.status_code}: {response.text[:300]}"
    if response.status_code == 204:
        return
    schema = declared["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(response.json())
    ]
    assert not problems, f"{method} {template} {response.status_code}: {problems}"


def dropped(raw: Any, answer: Any, where: str = "") -> list[str]:
    """Fields the handler returned that the answer lacks: what response_model filtering dropped."""
    if isinstance(raw, dict) and isinstance(answer, dict):
        missing = [f"{where}.{key}" for key in raw if key not in answer]
        return missing + [m for key in raw if key in answer for m in dropped(raw[key], answer[key], f"{where}.{key}")]
    if isinstance(raw, list) and isinstance(answer, list):
        return [m for i, (r, a) in enumerate(zip(raw, answer, strict=False)) for m in dropped(r, a, f"{where}[{i}]")]
    return []


def test_real_answers_validate_against_their_declared_schemas_with_no_undeclared_field(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    returned: list[Any] = []
    run_endpoint = fastapi.routing.run_endpoint_function

    async def capturing(**kwargs: Any) -> Any:  # what each handler returned, before response_model filtering
        raw = await run_endpoint(**kwargs)
        returned.append(raw)
        return raw

    monkeypatch.setattr(fastapi.routing, "run_endpoint_function", capturing)
    key = create_key(platform, "acme", "openapi", ADMIN)[1]
    client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {key}"
    document = strict(client.get("/api/openapi.json").json())
    job_id = make_job(platform, "acme", "openapi.jsonl")
    cancellable = make_job(platform, "acme", "queued.jsonl", run=False)
    # A job rejected at admission (no such model) has no model version: its view must still match the schema.
    rejected_path = "inbox/no-such-model/rejected.jsonl"
    rejected = admit_blob_created(platform, "acme", rejected_path, upload(platform, "acme", rejected_path, b"{}\n"))
    assert rejected is not None and rejected.model_version is None
    name = MODEL_NAME
    subscription = client.post(
        "/api/v1/subscriptions", json={"endpointUrl": "https://example.com/hook", "eventTypes": ["AIaaS.Job.Succeeded"]}
    )
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/api/health", "/api/health", {}),
        ("GET", "/api/health/ready", "/api/health/ready", {}),
        ("GET", "/api/v1/models", "/api/v1/models", {}),
        ("GET", "/api/v1/models/{name}", f"/api/v1/models/{name}", {}),
        ("GET", "/api/v1/models/{name}", "/api/v1/models/no-such-model", {}),
        ("POST", "/api/v1/uploads", "/api/v1/uploads", {"json": {"model": name, "filename": "x.jsonl"}}),
        ("POST", "/api/v1/uploads", "/api/v1/uploads", {"json": {"model": name}}),
        ("GET", "/api/v1/jobs", "/api/v1/jobs", {"params": {"limit": 1}}),
        ("GET", "/api/v1/jobs", "/api/v1/jobs", {"params": {"limit": 0}}),
        ("GET", "/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}", {}),
        ("GET", "/api/v1/jobs/{job_id}", f"/api/v1/jobs/{rejected.job_id}", {}),
        ("GET", "/api/v1/jobs/{job_id}/results", f"/api/v1/jobs/{job_id}/results", {"params": {"limit": 2}}),
        ("POST", "/api/v1/jobs/{job_id}/cancel", f"/api/v1/jobs/{cancellable}/cancel", {}),
        ("POST", "/api/v1/jobs/{job_id}/cancel", f"/api/v1/jobs/{job_id}/cancel", {}),
        ("GET", "/api/v1/models/{name}/aliases", f"/api/v1/models/{name}/aliases", {}),
        ("GET", "/api/v1/models/{name}/drift", f"/api/v1/models/{name}/drift", {}),
        ("GET", "/api/v1/models/{name}/retraining", f"/api/v1/models/{name}/retraining", {}),
        ("GET", "/api/v1/usage", "/api/v1/usage", {}),
        ("GET", "/api/v1/usage", "/api/v1/usage", {"params": {"groupBy": "day"}}),
        ("GET", "/api/v1/keys", "/api/v1/keys", {}),
        ("POST", "/api/v1/keys", "/api/v1/keys", {"json": {"name": "ci", "role": "reader"}}),
        ("GET", "/api/v1/audit", "/api/v1/audit", {}),
        ("GET", "/api/v1/events", "/api/v1/events", {}),
        ("GET", "/api/v1/subscriptions", "/api/v1/subscriptions", {}),
        ("GET", "/api/v2", "/api/v2", {}),
        ("GET", "/api/v2/health/live", "/api/v2/health/live", {}),
        ("GET", "/api/v2/health/ready", "/api/v2/health/ready", {}),
        ("GET", "/api/v2/models/{name}", f"/api/v2/models/{name}", {}),
        ("GET", "/api/v2/models/{name}/ready", f"/api/v2/models/{name}/ready", {}),
        ("GET", "/api/v2/models/{name}", "/api/v2/models/no-such-model", {}),
        (
            "POST",
            "/api/v2/models/{name}/infer",
            f"/api/v2/models/{name}/infer",
            {
                "json": {
                    "id": "1",
                    "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 30}],
                }
            },
        ),
        ("POST", "/api/v2/models/{name}/infer", f"/api/v2/models/{name}/infer", {"json": {"inputs": []}}),
    ]
    if subscription.status_code == 201:
        sid = subscription.json()["subscriptionId"]
        requests.append(("GET", "/api/v1/subscriptions/{subscription_id}", f"/api/v1/subscriptions/{sid}", {}))
        requests.append(
            (
                "GET",
                "/api/v1/subscriptions/{subscription_id}/deadletters",
                f"/api/v1/subscriptions/{sid}/deadletters",
                {},
            )
        )
    answered, compared = set(), 0
    for method, template, path, options in requests:
        returned.clear()
        response = client.request(method, path, **options)
        check_answer(document, method, template, response)
        answered.add(response.status_code)
        if returned and not isinstance(returned[-1], Response):
            compared += 1
            raw = jsonable_encoder(returned[-1], by_alias=True)
            assert not dropped(raw, response.json()), (
                f"{method} {path}: response_model dropped {dropped(raw, response.json())}"
            )
    assert client.get("/api/v1/events").json()["items"], "the finished job's events were checked too"
    assert {200, 201, 202, 400, 404} <= answered
    assert compared >= 20, "the handlers' own answers were compared with what was sent"
