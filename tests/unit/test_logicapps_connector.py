"""The Logic Apps connector: a valid Swagger 2.0 and Power Platform connector, true to the API it calls."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from shared.api.app import create_app
from shared.domain.events import EVENT_TYPES, Subscription
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from tests.fakes import MODEL_NAME, fakes_of, sample_bytes, upload

REPO = Path(__file__).resolve().parents[2]
CONNECTOR = REPO / "connectors/logicapps"
DEFINITION = CONNECTOR / "apiDefinition.swagger.json"
PROPERTIES = CONNECTOR / "apiProperties.json"
SCHEMAS = CONNECTOR / "schemas"  # copies of microsoft/PowerPlatformConnectors schemas/ (see its README.md)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _connector_script() -> ModuleType:
    """connectors/logicapps/connector.py (a script, not a package), for its reader of the JSONC schemas."""
    spec = importlib.util.spec_from_file_location("logicapps_connector", CONNECTOR / "connector.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load_jsonc = _connector_script().load_jsonc


def definition() -> dict[str, Any]:
    return json.loads(DEFINITION.read_text())  # type: ignore[no-any-return]


def operations(api: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in api["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def operation(api: dict[str, Any], operation_id: str) -> tuple[str, str, dict[str, Any]]:
    [found] = [(p, m, op) for p, m, op in operations(api) if op["operationId"] == operation_id]
    return found


def body_schema(api: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    [body] = [p for p in op.get("parameters", []) if p["in"] == "body"]
    return resolve(api, body["schema"])


def resolve(api: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = api["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def swagger_parser(path: Path) -> dict[str, Any]:
    """@apidevtools/swagger-parser's verdict on a Swagger file (connectors/logicapps/validate.mjs, node_modules)."""
    if shutil.which("node") is None or not (REPO / "node_modules/@apidevtools/swagger-parser").is_dir():
        pytest.fail("node and node_modules/@apidevtools/swagger-parser are needed: run `make deps` (make test does)")
    done = subprocess.run(
        ["node", str(CONNECTOR / "validate.mjs"), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    verdict: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) == verdict["valid"], done.stderr
    return verdict


def schema_errors(schema_file: str, document: Any) -> list[str]:
    schema = load_jsonc(SCHEMAS / schema_file)
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator(schema).iter_errors(document)]


def undescribed(api: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """Fields of `value` that `schema` does not describe (so the designer would not offer them)."""
    schema = resolve(api, schema)
    missing = []
    extra = schema.get("additionalProperties")
    if isinstance(value, dict) and extra is not True:
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                missing += undescribed(api, properties[key], item, f"{where}.{key}")
            elif isinstance(extra, dict):  # a map: every value of one described shape
                missing += undescribed(api, extra, item, f"{where}.{key}")
            else:
                missing.append(f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for item in value:
            missing += undescribed(api, schema["items"], item, f"{where}[]")
    return missing


# The validators


def test_definition_passes_swagger_parser(tmp_path: Path) -> None:
    verdict = swagger_parser(DEFINITION)
    assert verdict["valid"], verdict
    found = {op["operationId"] for op in verdict["operations"]}
    assert {"CreateUpload", "SubmitJob", "GetJob", "ListResults", "WhenAJobFinishes", "DeleteSubscription"} <= found

    # The validator does refuse a broken definition: a path parameter no operation declares.
    broken = definition()
    broken["paths"]["/v1/jobs/{jobId}"]["get"]["parameters"] = []
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    refused = swagger_parser(tmp_path / "broken.json")
    assert not refused["valid"] and "jobId" in refused["error"]


def test_files_pass_the_power_platform_schemas() -> None:
    assert schema_errors("powerplatform-apiDefinition.swagger.schema.json", definition()) == []
    assert schema_errors("powerplatform-apiProperties.schema.json", json.loads(PROPERTIES.read_text())) == []

    # What the tooling refuses, the copies refuse too: an unknown trigger kind, a visibility the designer lacks.
    broken = definition()
    broken["paths"]["/v1/subscriptions"]["post"]["x-ms-trigger"] = "always"
    broken["paths"]["/v1/jobs/{jobId}"]["get"]["x-ms-visibility"] = "hidden"
    errors = schema_errors("powerplatform-apiDefinition.swagger.schema.json", broken)
    assert any("always" in e for e in errors) and any("hidden" in e for e in errors), errors


def test_operations_have_what_the_designer_shows() -> None:
    api = definition()
    for path, method, op in operations(api):
        assert re.fullmatch(r"[A-Z][A-Za-z]+", op["operationId"]), (path, method)
        assert op["summary"] and op["description"], op["operationId"]
        for status, response in op["responses"].items():
            if status.startswith("2") and status != "204":
                assert "schema" in response, (op["operationId"], status)


# Auth


def test_auth_is_the_tenants_key_as_a_bearer_header() -> None:
    api = definition()
    [(name, scheme)] = api["securityDefinitions"].items()
    assert scheme["type"] == "apiKey" and scheme["in"] == "header" and scheme["name"] == "Authorization"
    assert "Bearer <key>" in scheme["description"]
    assert api["security"] == [{name: []}]
    [(param_name, param)] = json.loads(PROPERTIES.read_text())["properties"]["connectionParameters"].items()
    assert param_name == name and param["type"] == "securestring"
    assert "Bearer <key>" in param["uiDefinition"]["description"]


# The webhook trigger, the Logic Apps protocol


def test_trigger_follows_the_logic_apps_webhook_protocol() -> None:
    api = definition()
    [(path, method, trigger)] = [(p, m, op) for p, m, op in operations(api) if "x-ms-trigger" in op]
    assert (path, method, trigger["x-ms-trigger"]) == ("/v1/subscriptions", "post", "single")
    body = body_schema(api, trigger)
    notification = [name for name, field in body["properties"].items() if field.get("x-ms-notification-url")]
    assert notification == ["callbackUrl"]
    assert body["properties"]["callbackUrl"]["x-ms-visibility"] == "internal"
    assert body["required"] == ["callbackUrl"]  # every other field optional
    outcomes = body["properties"]["eventTypes"]["items"]
    assert outcomes["enum"] == list(EVENT_TYPES)
    assert [v["value"] for v in outcomes["x-ms-enum-values"]] == list(EVENT_TYPES)
    assert body["properties"]["modelNames"]["items"]["type"] == "string"

    created = trigger["responses"]["201"]
    assert "Location" in created["headers"]
    # The Location (<API URL>/v1/subscriptions/<id>) is an operation of the connector, so Logic Apps' DELETE on it
    # goes through the connector with the key.
    unsubscribe = api["paths"]["/v1/subscriptions/{subscriptionId}"]["delete"]
    assert unsubscribe["x-ms-visibility"] == "internal" and "204" in unsubscribe["responses"]


def test_trigger_output_describes_every_field_of_a_finished_jobs_event(platform: Platform) -> None:
    api = definition()
    content = api["paths"]["/v1/subscriptions"]["x-ms-notification-content"]
    events = []
    for name, rows in (("good.jsonl", sample_bytes("breast-cancer.jsonl")), ("broken.jsonl", b'{"id": "x"}\n')):
        run_job(platform, name, rows)
    events = [event.to_eventgrid() for event in fakes_of(platform).events.events]
    assert {e["eventType"] for e in events} == {"AIaaS.Job.Succeeded", "AIaaS.Job.Failed"}
    for event in events:  # one JSON object a delivery, as the relay posts it
        assert undescribed(api, content["schema"], event) == []
    assert resolve(api, content["schema"])["properties"]["eventType"]["enum"] == list(EVENT_TYPES)


# True to the API


def test_every_operation_is_a_route_of_the_api(platform: Platform) -> None:
    api = definition()
    spec = TestClient(create_app(lambda: platform)).get("/api/openapi.json").json()
    routes = {(re.sub(r"\{[^}]+\}", "{}", path), method) for path, item in spec["paths"].items() for method in item}
    for path, method, op in operations(api):
        route = (re.sub(r"\{[^}]+\}", "{}", api["basePath"] + path), method)
        assert route in routes, (op["operationId"], route)
        answered = spec["paths"][next(p for p in spec["paths"] if re.sub(r"\{[^}]+\}", "{}", p) == route[0])][method]
        declared = {s for s in op["responses"] if s != "default"}
        assert declared <= set(answered["responses"]), (op["operationId"], declared, set(answered["responses"]))
        body = [p for p in op.get("parameters", []) if p["in"] == "body"]
        if body:
            request = answered["requestBody"]["content"]["application/json"]["schema"]
            accepted = spec["components"]["schemas"][request["$ref"].rsplit("/", 1)[1]]["properties"]
            assert set(resolve(api, body[0]["schema"])["properties"]) <= set(accepted), op["operationId"]


def test_responses_describe_every_field_the_api_answers(platform: Platform) -> None:
    api = definition()
    client = TestClient(create_app(lambda: platform))
    key = {"Authorization": f"Bearer {platform_key(platform)}"}
    job_id = run_job(platform, "rows.jsonl", sample_bytes("breast-cancer.jsonl")[:4000].rsplit(b"\n", 1)[0])
    failed_id = run_job(platform, "bad.jsonl", b'{"id": "x"}\n')
    answers = {
        "CreateUpload": client.post("/api/v1/uploads", headers=key, json={"model": MODEL_NAME, "filename": "a.jsonl"}),
        "GetJob": client.get(f"/api/v1/jobs/{job_id}", headers=key),
        "ListResults": client.get(f"/api/v1/jobs/{job_id}/results?limit=2", headers=key),
        "ListModels": client.get("/api/v1/models", headers=key),
    }
    answers["GetJob (failed)"] = client.get(f"/api/v1/jobs/{failed_id}", headers=key)
    for name, answer in answers.items():
        _, _, op = operation(api, name.split()[0])
        schema = op["responses"][str(answer.status_code)]["schema"]
        assert undescribed(api, schema, answer.json()) == [], name
    assert answers["ListResults"].json()["continuationToken"]  # a page with every field present
    submitted = client.post(
        "/api/v1/jobs", headers=key, json={"model": MODEL_NAME, "blobPath": f"inbox/{MODEL_NAME}/rows.jsonl"}
    )
    assert undescribed(api, operation(api, "SubmitJob")[2]["responses"]["202"]["schema"], submitted.json()) == []
    callback = Subscription("acme", "a" * 32, "https://prod-00.westeurope.logic.azure.com/x?sig=s", kind="callback")
    assert undescribed(api, api["definitions"]["Subscription"], callback.public_view()) == []


def platform_key(platform: Platform) -> str:
    from shared.services.tenants import create_key

    return create_key(platform, "acme", "connector-test", "AIaaS.Admin")[1]


def run_job(platform: Platform, name: str, rows: bytes) -> str:
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, rows))
    assert job is not None
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        run_shard(platform, message)
    return job.job_id


# The sample workflow


def connector_calls(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, inputs) of every trigger and action of a workflow that calls the connector, nested ones too."""
    if isinstance(node, dict):
        for name, value in node.items():
            if isinstance(value, dict) and value.get("type") in ("ApiConnection", "ApiConnectionWebhook"):
                yield name, value
            yield from connector_calls(value)


def operation_of(api: dict[str, Any], method: str, path: str) -> str:
    """The operationId a workflow's (method, path) reaches; its @{...} expressions stand for path parameters."""
    concrete = re.sub(r"@\{[^}]*\}", "X", path)
    for template, item in api["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)), concrete) and method in item:
            return str(item[method]["operationId"])
    raise AssertionError(f"{method} {path} is no operation of the connector")


def test_sample_workflow_uses_the_connectors_operations() -> None:
    api = definition()
    workflow = json.loads((CONNECTOR / "sample-workflow.json").read_text())["definition"]
    [(trigger_name, trigger)] = workflow["triggers"].items()
    assert trigger["type"] == "ApiConnectionWebhook"
    assert operation_of(api, "post", trigger["inputs"]["path"]) == "WhenAJobFinishes"
    body = body_schema(api, operation(api, "WhenAJobFinishes")[2])
    assert set(trigger["inputs"]["body"]) <= set(body["properties"])
    assert trigger["inputs"]["body"]["callbackUrl"] == "@{listCallbackUrl()}"
    assert set(trigger["inputs"]["body"]["eventTypes"]) <= set(EVENT_TYPES)

    # A webhook trigger names no method: Logic Apps calls its operation's.
    used = {
        operation_of(api, call["inputs"].get("method", "post"), call["inputs"]["path"])
        for _, call in connector_calls(workflow)
    }
    used -= {"WhenAJobFinishes"}
    assert {"GetJob", "ListResults"} <= used

    # Every trigger output the workflow reads is one the trigger declares.
    event = resolve(api, api["paths"]["/v1/subscriptions"]["x-ms-notification-content"]["schema"])
    text = json.dumps(workflow)
    for expression in re.findall(r"triggerBody\(\)((?:\?\['[^']+'\])+)", text):
        schema = event
        for key in re.findall(r"\['([^']+)'\]", expression):
            assert key in schema.get("properties", {}), (trigger_name, expression)
            schema = resolve(api, schema["properties"][key])


def test_icon_is_what_the_tooling_takes() -> None:
    icon = Image.open(CONNECTOR / "icon.png")
    assert icon.format == "PNG" and icon.width == icon.height and 100 <= icon.width <= 230
    brand = json.loads(PROPERTIES.read_text())["properties"]["iconBrandColor"]
    red, green, blue = icon.convert("RGB").getpixel((0, 0))  # type: ignore[misc]
    assert f"#{red:02x}{green:02x}{blue:02x}" == brand.lower()  # the background is the brand colour, as asked


def test_broken_copies_are_caught() -> None:
    """undescribed() finds a field the schema lacks (the checks above could not pass by accident)."""
    api = definition()
    schema = copy.deepcopy(api["definitions"]["Job"])
    del schema["properties"]["counts"]["properties"]["failed"]
    assert undescribed(api, schema, {"counts": {"records": 1, "succeeded": 1, "failed": 0}}) == [".counts.failed"]
