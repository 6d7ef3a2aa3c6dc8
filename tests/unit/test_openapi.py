"""/api/openapi.json describes every answer: typed 2xx bodies, every error status with its body, no 422; real
answers (over the fakes) validate against their declared schemas with no undeclared field."""

from __future__ import annotations

import copy
import dataclasses
import re
import uuid
from pathlib import Path
from typing import Any

import fastapi.routing
import jsonschema
import orjson
import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.testclient import TestClient
from starlette.responses import Response

from shared.api.app import create_app
from shared.domain.delivery import DeadLetter
from shared.domain.errors import InvalidInput
from shared.domain.models import ModelCard
from shared.domain.tenants import ADMIN
from shared.ports import TrainedModel, TrainingData
from shared.services import retraining, rollouts
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from shared.services.tenants import create_key
from tests.fakes import MODEL_NAME, RecordingTrainer, add_tenant, make_platform, sample_bytes, upload
from tests.unit.test_api import make_job
from tests.unit.test_retraining import NAME, inline, private_model, shifted_rows
from tests.unit.test_rollouts import ROWS, publish_version

# The only objects in a 2xx answer without declared properties, each a map whose keys are not the platform's.
FREE_FORM = {
    "ResultItem.output": "a model's output for one record: its keys are the model's (its card's outputSchema)",
    "JobView.parameters": "the model's parameters as the caller sent them (the card's own `parameters`)",
    "ModelCardView.inputSchema": "a JSON Schema of one record, from the model package",
    "ModelCardView.outputSchema": "a JSON Schema of one output, from the model package",
    "ModelCardView.metrics": "the package's own evaluation figures, named by the package",
    "RetrainingRun.metrics": "the trained version's evaluation figures, named by the trainer (an Azure ML job's own)",
    "Lineage.metrics": "the same figures, as the new version's card records them",
    "AuditDetails.metrics": "a retraining run's figures in its audit entry, named by the trainer",
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


class Answers:
    """A client of the app over `platform` whose every answer is checked against the strict document, and compared
    with what the handler returned before response_model filtering (nothing dropped, nothing changed)."""

    def __init__(self, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
        self.returned: list[Any] = []
        run_endpoint = fastapi.routing.run_endpoint_function

        async def capturing(**kwargs: Any) -> Any:  # what each handler returned, before response_model filtering
            raw = await run_endpoint(**kwargs)
            self.returned.append(raw)
            return raw

        monkeypatch.setattr(fastapi.routing, "run_endpoint_function", capturing)
        key = create_key(platform, "acme", "openapi", ADMIN)[1]
        self.client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)
        self.client.headers["Authorization"] = f"Bearer {key}"
        self.document = strict(self.client.get("/api/openapi.json").json())
        self.answered: set[int] = set()
        self.compared = 0

    def check(self, method: str, template: str, path: str, **options: Any) -> Any:
        self.returned.clear()
        response = self.client.request(method, path, **options)
        check_answer(self.document, method, template, response)
        self.answered.add(response.status_code)
        if self.returned and not isinstance(self.returned[-1], Response):
            self.compared += 1
            raw = jsonable_encoder(self.returned[-1], by_alias=True)
            assert not dropped(raw, response.json()), (
                f"{method} {path}: response_model dropped {dropped(raw, response.json())}"
            )
            assert not changed(raw, response.json()), (
                f"{method} {path}: response_model changed {changed(raw, response.json())}"
            )
        return response.json() if response.content else None


# Nulls an answer adds to what its handler returned: the top-level optional fields of answers on routes without
# response_model_exclude_unset, sent as null when absent (so they were before the parts inside them were typed).
ADDED_NULLS = re.compile(
    r"^(\.items\[\d+\]\.details"
    r"|(\.runs\[\d+\])?\.(jobId|parentVersion|version|metrics|lineage|rollout|error|labelField|trainer)"
    r"|(\.policy)?\.canary\.(gates|evidence))$"
)


def changed(raw: Any, answer: Any, where: str = "") -> list[str]:
    """Values the answer holds otherwise than the handler returned them (a float for an int, a field added)."""
    if isinstance(raw, dict) and isinstance(answer, dict):
        added = [
            f"{where}.{key}"
            for key in answer
            if key not in raw and not (answer[key] is None and ADDED_NULLS.match(f"{where}.{key}"))
        ]
        return added + [m for key in raw if key in answer for m in changed(raw[key], answer[key], f"{where}.{key}")]
    if isinstance(raw, list) and isinstance(answer, list):
        return [m for i, (r, a) in enumerate(zip(raw, answer, strict=False)) for m in changed(r, a, f"{where}[{i}]")]
    return [] if raw == answer and type(raw) is type(answer) else [f"{where}: {raw!r} -> {answer!r}"]


def test_real_answers_validate_against_their_declared_schemas_with_no_undeclared_field(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = Answers(platform, monkeypatch)
    client = answers.client
    job_id = make_job(platform, "acme", "openapi.jsonl")
    # A job with failed records: its errors page has entries (one per page here, so a token too).
    broken_path = f"inbox/{MODEL_NAME}/broken.jsonl"
    broken_lines = [
        *sample_bytes("breast-cancer.jsonl").splitlines()[:3],
        b"not json",
        b'{"id": "x", "mean radius": "?"}',
    ]
    broken = admit_blob_created(
        platform, "acme", broken_path, upload(platform, "acme", broken_path, b"\n".join(broken_lines) + b"\n")
    )
    assert broken is not None
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        run_shard(platform, message)
    first_errors = client.get(f"/api/v1/jobs/{broken.job_id}/errors", params={"limit": 1}).json()
    assert len(first_errors["items"]) == 1 and first_errors["continuationToken"], first_errors
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
        ("GET", "/api/v1/jobs/{job_id}/errors", f"/api/v1/jobs/{broken.job_id}/errors", {"params": {"limit": 1}}),
        (
            "GET",
            "/api/v1/jobs/{job_id}/errors",
            f"/api/v1/jobs/{broken.job_id}/errors",
            {"params": {"continuationToken": first_errors["continuationToken"]}},
        ),
        ("GET", "/api/v1/jobs/{job_id}/errors", f"/api/v1/jobs/{job_id}/errors", {}),
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
    assert subscription.status_code == 201, subscription.text
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
    for method, template, path, options in requests:
        answers.check(method, template, path, **options)
    assert client.get("/api/v1/events").json()["items"], "the finished job's events were checked too"
    assert {200, 201, 202, 400, 404} <= answers.answered
    assert answers.compared >= 20, "the handlers' own answers were compared with what was sent"


class WhereTrainer(RecordingTrainer):
    """The recording trainer reporting where it trains as the real trainers do: the local builder
    (shared.modelbuild.retrain) or an Azure ML job (shared.adapters.azureml), with that job in the lineage too."""

    where: dict[str, Any] = {}

    def train(self, parent: ModelCard, data: TrainingData, *, version: str, started: Any = None) -> TrainedModel:
        if started is not None:
            started(self.where)
        trained = super().train(parent, data, version=version)
        job = self.where.get("azureml", {}).get("job")
        return dataclasses.replace(trained, run={"azureml": {"job": job}} if job else None)


def test_answers_of_rollouts_audit_events_dead_letters_and_retraining_validate_with_no_undeclared_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = WhereTrainer()
    platform = make_platform(trainer=trainer, batch_size=8)
    add_tenant(platform, "acme")
    answers = Answers(platform, monkeypatch)
    publish_version(platform, tmp_path, "2")
    publish_version(platform, tmp_path, "3", inverted=True)
    aliases = ("GET", "/api/v1/models/{name}/aliases", f"/api/v1/models/{MODEL_NAME}/aliases")
    # A canary promoted by its gates: the decision in the alias history, the audit log and a Promoted event.
    gates = {"maxErrorRate": 0.5, "minAgreement": 0.5, "maxSecondsPerRecord": 60}
    canary = {"version": "2", "percent": 99, "gates": gates, "evidence": {"jobs": 1, "records": 1}}
    rollouts.start_rollout(platform, owner=None, name=MODEL_NAME, alias="production", canary=canary, by="op")
    while rollouts.present(platform.models.get_aliases("acme", MODEL_NAME))["rollouts"]:
        make_job(platform, "acme", f"{uuid.uuid4().hex}.jsonl")
    # Then one in progress, with a canary and a shadow; its jobs (one of them drifted) show their arm.
    rollouts.start_rollout(
        platform,
        owner=None,
        name=MODEL_NAME,
        alias="production",
        # A gate a drifted job cannot fail: the job ids are random, so the drifted one may land on either arm,
        # and the rollout must stay in progress (noDrift would roll it back half the time).
        canary={"version": "1", "percent": 50, "gates": {"maxDriftShare": 1.0}, "evidence": {"jobs": 1000}},
        shadow={"version": "3"},
        by="op",
    )
    jobs = [make_job(platform, "acme", f"{uuid.uuid4().hex}.jsonl") for _ in range(2)]
    rows = [orjson.loads(line) for line in ROWS[:40]]
    shifted = [{k: v * 3 if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    path = f"inbox/{MODEL_NAME}/drifted.jsonl"
    drifted = admit_blob_created(
        platform, "acme", path, upload(platform, "acme", path, b"".join(orjson.dumps(r) + b"\n" for r in shifted))
    )
    assert drifted is not None
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        run_shard(platform, message)
    view = answers.check(*aliases)
    assert view["history"][-2]["rollout"] == "promoted" and view["history"][-1]["rollout"] == "started"
    rollout = view["rollouts"]["production"]
    assert rollout["status"]["gates"][0]["name"] == "maxDriftShare" and "figures" in rollout["shadow"]
    for job_id in [*jobs, drifted.job_id]:
        job = answers.check("GET", "/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}")
        assert job["rollout"]["alias"] == "production"
    assert job["drift"]["status"] == "drifted"
    # Retraining a private model: one run on "Azure ML" that succeeds, one on the local builder that fails.
    private_model(platform)
    monkeypatch.setattr(retraining, "background", inline)
    runs = "/api/v1/models/{name}/retraining"
    policy = {"canary": {"percent": 20, "gates": {"maxErrorRate": 0.2, "noDrift": True}, "evidence": {"jobs": 2}}}
    answers.check("PUT", runs, f"/api/v1/models/{NAME}/retraining", json=policy)
    trainer.where = {"azureml": {"job": "aiaas-retrain-1", "experiment": "aiaas-retraining"}}
    upload(platform, "acme", "data/labelled.jsonl", shifted_rows())
    retrain = ("POST", "/api/v1/models/{name}/retrain", f"/api/v1/models/{NAME}/retrain")
    assert answers.check(*retrain, json={"blobPath": "data/labelled.jsonl"})["status"] == "queued"
    trainer.where, trainer.fail = {"local": {"builder": "breast_cancer", "rows": 569}}, InvalidInput("no label")
    upload(platform, "acme", "data/unlabelled.jsonl", shifted_rows(label_field="other"))
    answers.check(*retrain, json={"blobPath": "data/unlabelled.jsonl"})
    retrained = answers.check("GET", runs, f"/api/v1/models/{NAME}/retraining")
    assert sorted(run["status"] for run in retrained["runs"]) == ["failed", "succeeded"]
    assert all(run["trainer"] for run in retrained["runs"])
    assert any(run.get("lineage", {}).get("trainer") for run in retrained["runs"] if run["status"] == "succeeded")
    answers.check("GET", "/api/v1/models/{name}/aliases", f"/api/v1/models/{NAME}/aliases")
    # The audit log holds the rollout's decision and both runs, with their details.
    audit = answers.check("GET", "/api/v1/audit", "/api/v1/audit", params={"limit": 500})
    actions = {item["action"] for item in audit["items"] if item.get("details")}
    assert actions == {"models.rollout.promote", "models.retrain"}, actions
    # The event log holds job, drift and rollout events; each is also dead-lettered to a subscription.
    events = answers.check("GET", "/api/v1/events", "/api/v1/events", params={"limit": 1000})
    types = {event["eventType"] for event in events["items"]}
    assert {"AIaaS.Job.Succeeded", "AIaaS.Model.DriftDetected", "AIaaS.Model.Promoted"} <= types, types
    subscription = answers.client.post("/api/v1/subscriptions", json={"endpointUrl": "https://example.com/hook"})
    assert subscription.status_code == 201, subscription.text
    sid = subscription.json()["subscriptionId"]
    for event in platform.events.events:  # type: ignore[attr-defined]
        letter = DeadLetter(event, "MaxDeliveryAttemptsExceeded", 30, "NotFound", 404, event.event_time)
        platform.dead_letters.add(sid, letter)  # type: ignore[attr-defined]
    letters = "/api/v1/subscriptions/{subscription_id}/deadletters"
    dead = answers.check("GET", letters, f"/api/v1/subscriptions/{sid}/deadletters", params={"limit": 500})
    assert {letter["event"]["eventType"] for letter in dead["items"]} == types
    assert answers.compared >= 12
