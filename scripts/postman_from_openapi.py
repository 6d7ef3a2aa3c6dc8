"""Writes docs/postman/aiaas.postman_collection.json (Postman v2.1) from the API's own OpenAPI document."""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/postman_from_openapi.py` from a fresh clone
    sys.path.insert(0, str(REPO))

OUTPUT = REPO / "docs/postman/aiaas.postman_collection.json"
SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
# A stable id, so that the file only changes when the API does.
COLLECTION_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "aiaas/docs/postman/aiaas.postman_collection.json"))
MODEL = "breast-cancer-classifier"
FEATURES = [
    "mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness", "mean compactness",
    "mean concavity", "mean concave points", "mean symmetry", "mean fractal dimension", "radius error",
    "texture error", "perimeter error", "area error", "smoothness error", "compactness error", "concavity error",
    "concave points error", "symmetry error", "fractal dimension error", "worst radius", "worst texture",
    "worst perimeter", "worst area", "worst smoothness", "worst compactness", "worst concavity",
    "worst concave points", "worst symmetry", "worst fractal dimension",
]  # fmt: skip
# The first row of build/samples/breast-cancer.jsonl; the sample file is three rows near it.
ROW = [13.68, 16.33, 87.76, 575.5, 0.09277, 0.07255, 0.01752, 0.0188, 0.1631, 0.06155, 0.2047, 0.4801, 1.373, 17.25,
       0.003828, 0.007228, 0.007078, 0.005077, 0.01054, 0.001697, 15.85, 20.2, 101.6, 773.4, 0.1264, 0.1564, 0.1206,
       0.08704, 0.2806, 0.07782]  # fmt: skip
SAMPLE_FILE = "".join(
    json.dumps({"id": f"postman-{n}", **dict(zip(FEATURES, [v * (1 + n / 100) for v in ROW], strict=True))}) + "\n"
    for n in range(3)
)
TERMINAL = ["succeeded", "partially_succeeded", "failed", "rejected", "cancelled"]
# A path parameter's collection variable: {job_id} -> {{jobId}}.
PATH_VARIABLES = {
    "job_id": "jobId",
    "name": "modelName",
    "version": "modelVersion",
    "alias": "modelAlias",
    "key_id": "keyId",
    "subscription_id": "subscriptionId",
}
CREATED_ID = {"/v1/keys": "keyId", "/v1/subscriptions": "subscriptionId"}
SKIP_WITHOUT_WEBHOOK = "if (!pm.variables.get('webhookUrl')) { pm.execution.skipRequest(); }"
SKIP_WITHOUT_SUBSCRIPTION = "if (!pm.variables.get('subscriptionId')) { pm.execution.skipRequest(); }"

# What a normal call of an operation sends and answers against a fresh tenant, where the generic one (the schema's
# required fields, the first 2xx) does not fit: a public model's aliases and retraining belong to the operator, so
# those calls are sent as a tenant would and their documented refusal is what is checked.
OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/uploads"): {"body": {"model": "{{modelName}}", "filename": "postman-extra.jsonl"}},
    ("POST", "/v1/jobs"): {"body": {"model": "{{modelName}}", "blobPath": "{{blobPath}}"}},
    ("POST", "/v1/jobs/{job_id}/cancel"): {
        "status": 409,
        "why": "the first job has ended, and an ended job is not cancelled (a queued or running one answers 202)",
    },
    ("POST", "/v1/keys"): {"body": {"name": "postman", "role": "AIaaS.Reader"}},
    ("POST", "/v1/models"): {
        "body": {"card": {"name": "postman-probe"}},
        "status": 400,
        "why": "a card without an artifact is refused (a real registration sends ONNX bytes or a remote endpoint)",
    },
    ("PUT", "/v1/models/{name}/aliases/{alias}"): {
        "body": {"version": "{{modelVersion}}"},
        "status": 400,
        "why": "a public model's aliases are moved by the operator (NotModelOwner)",
    },
    ("POST", "/v1/models/{name}/retrain"): {
        "body": {"blobPath": "{{blobPath}}"},
        "status": 400,
        "why": "only a tenant's private model retrains",
    },
    ("GET", "/v1/models/{name}/retraining"): {
        "status": 400,
        "why": "only a tenant's private model has a retraining policy and runs",
    },
    ("PUT", "/v1/models/{name}/retraining"): {
        "body": {"onDrift": False},
        "status": 400,
        "why": "only a tenant's private model has a retraining policy",
    },
    ("POST", "/v1/subscriptions"): {
        "body": {"endpointUrl": "{{webhookUrl}}", "schema": "EventGridSchema"},
        "prerequest": SKIP_WITHOUT_WEBHOOK,
    },
    ("POST", "/v1/subscriptions/{subscription_id}/redeliver"): {"body": {"since": "2020-01-01T00:00:00Z"}},
    ("POST", "/v2/models/{name}/infer"): {
        "body": {"inputs": [{"name": "input", "shape": [1, len(ROW)], "datatype": "FP32", "data": ROW}]}
    },
    ("POST", "/v2/models/{name}/versions/{version}/infer"): {
        "body": {"inputs": [{"name": "input", "shape": [1, len(ROW)], "datatype": "FP32", "data": ROW}]}
    },
}


def openapi() -> dict[str, Any]:
    """The document the API serves at /api/openapi.json (no platform is needed to build it)."""
    from fastapi.testclient import TestClient

    from shared.api.app import create_app

    def no_platform() -> Any:
        raise RuntimeError("the OpenAPI document needs no platform")

    answer = TestClient(create_app(no_platform)).get("/api/openapi.json")
    answer.raise_for_status()
    return dict(answer.json())


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 20:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        seen += 1
    return schema


def _example(doc: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value for a schema: its example or default, else one built from its required fields."""
    schema = _resolve(doc, schema)
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _example(doc, next((s for s in schema[key] if s.get("type") != "null"), schema[key][0]), depth)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if depth > 4:
            return {}
        return {name: _example(doc, props.get(name, {}), depth + 1) for name in schema.get("required", [])}
    return {"array": [], "integer": 1, "number": 1, "boolean": False, "string": "postman"}.get(str(kind), "postman")


def _js(value: Any) -> str:
    return json.dumps(value)


def _status_tests(status: int, required: list[str], error: bool) -> list[str]:
    lines = [f"pm.test('answers {status}', function () {{ pm.response.to.have.status({status}); }});"]
    if error:
        lines += [
            "pm.test('the error body has its code and message', function () {",
            "    const body = pm.response.json();",
            "    pm.expect(body.error).to.be.an('object');",
            "    pm.expect(body.error.code).to.be.a('string');",
            "    pm.expect(body.error.message).to.be.a('string');",
            "});",
        ]
    elif required:
        lines += [
            "pm.test('the answer has the fields its schema requires', function () {",
            "    const body = pm.response.json();",
            f"    {_js(required)}.forEach(function (field) {{ pm.expect(body).to.have.property(field); }});",
            "});",
        ]
    return lines


def _event(listen: str, lines: list[str]) -> dict[str, Any]:
    return {"listen": listen, "script": {"type": "text/javascript", "exec": lines}}


def _url(path: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    raw = "{{baseUrl}}" + path + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
    url: dict[str, Any] = {"raw": raw, "host": ["{{baseUrl}}"], "path": [p for p in path.split("/") if p]}
    if query:
        url["query"] = [{"key": k, "value": v} for k, v in query]
    return url


def _json_body(body: Any) -> dict[str, Any]:
    return {"mode": "raw", "raw": json.dumps(body, indent=2), "options": {"raw": {"language": "json"}}}


def _request(
    name: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    tests: list[str],
    prerequest: list[str] | None = None,
    description: str = "",
    query: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {"method": method, "header": [], "url": _url(path, query)}
    if description:
        request["description"] = description
    if body is not None:
        request["header"] = [{"key": "Content-Type", "value": "application/json"}]
        request["body"] = _json_body(body)
    events = [_event("test", tests)]
    if prerequest:
        events.insert(0, _event("prerequest", prerequest))
    return {"name": name, "event": events, "request": request}


def _folder_name(operation: dict[str, Any], path: str) -> str:
    if operation.get("tags"):
        return str(operation["tags"][0])
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if parts[:1] == ["health"]:
        return "Health"
    return {"models": "Models", "uploads": "Jobs", "jobs": "Jobs", "usage": "Usage"}.get(
        parts[1] if len(parts) > 1 else parts[0], parts[-1].title()
    )


def _required_fields(doc: dict[str, Any], response: dict[str, Any]) -> list[str]:
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if not schema:
        return []
    return [str(f) for f in _resolve(doc, schema).get("required", [])]


def operation_item(doc: dict[str, Any], method: str, full_path: str, operation: dict[str, Any]) -> dict[str, Any]:
    """One request of an operation: its path parameters from collection variables, a body, tests of its answer."""
    path = full_path.removeprefix("/api")
    override = OVERRIDES.get((method, path), {})
    statuses = sorted(int(s) for s in operation.get("responses", {}) if s.isdigit())
    success = next((s for s in statuses if 200 <= s < 300), 200)
    status = int(override.get("status", success))
    postman_path = re.sub(r"\{([^}]+)\}", lambda m: "{{" + PATH_VARIABLES.get(m[1], m[1]) + "}}", path)
    body = override.get("body")
    if body is None and "requestBody" in operation:
        schema = operation["requestBody"].get("content", {}).get("application/json", {}).get("schema", {})
        body = _example(doc, schema)
    error = status >= 400
    required = [] if error else _required_fields(doc, operation.get("responses", {}).get(str(status), {}))
    tests = _status_tests(status, required, error)
    if method == "POST" and path in CREATED_ID and not error:
        variable = CREATED_ID[path]
        tests += [
            "const created = pm.response.json();",
            f"pm.collectionVariables.set({_js(variable)}, created[{_js(variable)}] || created.id);",
        ]
    prerequest = [override["prerequest"]] if "prerequest" in override else []
    if "{subscription_id}" in path:
        prerequest.append(SKIP_WITHOUT_SUBSCRIPTION)
    summary = str(operation.get("summary") or operation.get("operationId") or f"{method} {path}")
    description = str(operation.get("description") or "")
    if "why" in override:
        description = (description + "\n\n" if description else "") + f"Checked here: {override['why']}."
    return _request(
        f"{summary} ({method} {path})",
        method,
        postman_path,
        body=body,
        tests=tests,
        prerequest=prerequest,
        description=description,
    )


def _flow() -> dict[str, Any]:
    """The ordered first-job walk that works against a fresh tenant: every later folder uses what it sets."""
    wait_pre = [
        "const tries = Number(pm.collectionVariables.get('waitTries') || 0);",
        "pm.collectionVariables.set('waitTries', tries + 1);",
        "if (tries > 0) { setTimeout(function () {}, 1000); }",
    ]
    wait_tests = [
        "const blobPath = pm.collectionVariables.get('blobPath');",
        "const tries = Number(pm.collectionVariables.get('waitTries'));",
        "pm.test('answers 200', function () { pm.response.to.have.status(200); });",
        "const job = (pm.response.json().items || []).find(function (j) {",
        "    return j.input && j.input.blobPath === blobPath;",
        "});",
        f"const terminal = {_js(TERMINAL)};",
        "if (job) { pm.collectionVariables.set('jobId', job.jobId); }",
        "if ((!job || terminal.indexOf(job.status) < 0) && tries < 180) {",
        "    postman.setNextRequest(pm.info.requestName);  // again, a second later",
        "} else {",
        "    pm.collectionVariables.set('waitTries', 0);",
        "    pm.test('the upload became a job that ended', function () {",
        "        pm.expect(job, 'a job for ' + blobPath).to.be.an('object');",
        "        pm.expect(terminal).to.include(job.status);",
        "    });",
        "}",
    ]
    items = [
        _request(
            "1. List the models",
            "GET",
            "/v1/models",
            tests=[
                "pm.test('answers 200', function () { pm.response.to.have.status(200); });",
                "const models = pm.response.json().items;",
                f"const model = models.find(function (m) {{ return m.name === {_js(MODEL)}; }}) || models[0];",
                "pm.test('a model is there to use', function () { pm.expect(model).to.be.an('object'); });",
                "pm.collectionVariables.set('modelName', model.name);",
                "const versions = (model.versions || []).map(function (v) { return v.version || v; });",
                "pm.collectionVariables.set('modelVersion', String(versions[versions.length - 1] || '1'));",
            ],
        ),
        _request(
            "2. Create an upload",
            "POST",
            "/v1/uploads",
            body={"model": "{{modelName}}", "filename": "postman.jsonl"},
            tests=[
                "pm.test('answers 201', function () { pm.response.to.have.status(201); });",
                "const body = pm.response.json();",
                "pm.test('with an upload URL and a blob path', function () {",
                "    pm.expect(body.uploadUrl).to.match(/^https?:\\/\\//);",
                "    pm.expect(body.blobPath).to.be.a('string');",
                "});",
                "pm.collectionVariables.set('uploadUrl', body.uploadUrl);",
                "pm.collectionVariables.set('blobPath', body.blobPath);",
                "pm.collectionVariables.set('waitTries', 0);",
            ],
        ),
        {
            "name": "3. Send the file to the upload URL",
            "event": [
                _event(
                    "test", ["pm.test('the blob is stored (201)', function () { pm.response.to.have.status(201); });"]
                )
            ],
            "request": {
                "auth": {"type": "noauth"},
                "method": "PUT",
                "header": [
                    {"key": "x-ms-blob-type", "value": "BlockBlob"},
                    {"key": "Content-Type", "value": "application/x-ndjson"},
                ],
                "body": {"mode": "raw", "raw": SAMPLE_FILE},
                "url": "{{uploadUrl}}",
                "description": "The SAS URL carries its own authorisation: no API key goes to storage.",
            },
        },
        _request(
            "4. Wait for the job",
            "GET",
            "/v1/jobs",
            tests=wait_tests,
            prerequest=wait_pre,
            description="Repeats (a second apart, up to 3 minutes) until the upload's job has ended.",
        ),
        _request(
            "5. Get the job",
            "GET",
            "/v1/jobs/{{jobId}}",
            tests=[
                "pm.test('answers 200', function () { pm.response.to.have.status(200); });",
                "const job = pm.response.json();",
                "pm.test('it succeeded on all 3 records', function () {",
                "    pm.expect(job.status).to.eql('succeeded');",
                "    pm.expect(job.counts.records).to.eql(3);",
                "    pm.expect(job.counts.succeeded).to.eql(3);",
                "});",
            ],
        ),
        _request(
            "6. List the results",
            "GET",
            "/v1/jobs/{{jobId}}/results",
            tests=[
                "pm.test('answers 200', function () { pm.response.to.have.status(200); });",
                "const items = pm.response.json().items;",
                "pm.test('one result per record, with its id and output', function () {",
                "    pm.expect(items.map(function (r) { return r.id; })).to.have.members("
                "['postman-0', 'postman-1', 'postman-2']);",
                "    items.forEach(function (r) { pm.expect(r).to.have.property('output'); });",
                "});",
            ],
        ),
        _request(
            "7. List the subscriptions",
            "GET",
            "/v1/subscriptions",
            tests=[
                "pm.test('answers 200', function () { pm.response.to.have.status(200); });",
                "pm.test('a list', function () { pm.expect(pm.response.json().items).to.be.an('array'); });",
            ],
        ),
        _request(
            "8. Usage",
            "GET",
            "/v1/usage",
            tests=[
                "pm.test('answers 200', function () { pm.response.to.have.status(200); });",
                "pm.test('totals and quota', function () {",
                "    const body = pm.response.json();",
                "    pm.expect(body).to.have.property('totals');",
                "    pm.expect(body).to.have.property('quota');",
                "});",
            ],
        ),
        _request(
            "9. Events",
            "GET",
            "/v1/events",
            tests=[
                "pm.test('answers 200', function () { pm.response.to.have.status(200); });",
                "pm.test('a list', function () { pm.expect(pm.response.json().items).to.be.an('array'); });",
            ],
        ),
    ]
    return {
        "name": "First job",
        "description": "Run in order: a model, an upload, the file, its job to the end, its results, then usage "
        "and events. The folders after it use the variables it sets (modelName, blobPath, jobId).",
        "item": items,
    }


def build(doc: dict[str, Any]) -> dict[str, Any]:
    """The collection: the first-job flow, then one request per operation in a folder per tag."""
    folders: dict[str, list[tuple[bool, dict[str, Any]]]] = {}
    for full_path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if method.upper() not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                continue
            item = operation_item(doc, method.upper(), full_path, operation)
            # Deletes last in their folder, so that what they remove was there for the others.
            folders.setdefault(_folder_name(operation, full_path.removeprefix("/api")), []).append(
                (method.upper() == "DELETE", item)
            )
    variables = [
        {"key": "baseUrl", "value": "http://127.0.0.1:7071/api"},
        {"key": "apiKey", "value": ""},
        {"key": "webhookUrl", "value": ""},
        {"key": "modelName", "value": MODEL},
        {"key": "modelVersion", "value": "1"},
        {"key": "modelAlias", "value": "production"},
    ] + [{"key": k, "value": ""} for k in ("uploadUrl", "blobPath", "jobId", "keyId", "subscriptionId", "waitTries")]
    return {
        "info": {
            "_postman_id": COLLECTION_ID,
            "name": str(doc.get("info", {}).get("title", "AIaaS")),
            "description": "Generated by scripts/postman_from_openapi.py from /api/openapi.json: do not edit by "
            "hand. Set baseUrl (e.g. http://127.0.0.1:7071/api) and apiKey (a tenant's Admin key); webhookUrl, "
            "when set, must pass the Event Grid handshake (else the subscription requests are skipped).",
            "schema": SCHEMA_URL,
        },
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiKey}}", "type": "string"}]},
        "variable": variables,
        "item": [_flow()]
        + [
            {"name": name, "item": [item for _, item in sorted(entries, key=lambda e: e[0])]}
            for name, entries in folders.items()
        ],
    }


def render(doc: dict[str, Any] | None = None) -> str:
    return json.dumps(build(doc if doc is not None else openapi()), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.exists() and args.out.read_text() == text
        print("up to date" if same else f"{args.out} is stale: run scripts/postman_from_openapi.py")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
