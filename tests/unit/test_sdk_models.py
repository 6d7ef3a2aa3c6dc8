"""The SDK's models (clients/python) agree with the API's OpenAPI: the same fields of the same types, none required
that may be absent."""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any

import pytest
from aiaas_client import models
from pydantic import BaseModel

from shared.api.app import create_app

# Each SDK model and where the OpenAPI describes it: an operation, its status, and the way into its answer
# (a property name, "[]" for an array's items, "{}" for a map's values). Path parameters match whatever their name.
WHERE: dict[type[BaseModel], tuple[str, str, tuple[str, ...]]] = {
    models.Job: ("GET /api/v1/jobs/{}", "200", ()),
    models.JobRollout: ("GET /api/v1/jobs/{}", "200", ("rollout",)),
    models.DriftSection: ("GET /api/v1/jobs/{}", "200", ("drift",)),
    models.DriftColumn: ("GET /api/v1/jobs/{}", "200", ("drift", "features", "[]")),
    models.Counts: ("GET /api/v1/jobs/{}", "200", ("counts",)),
    models.ModelRef: ("GET /api/v1/jobs/{}", "200", ("model",)),
    models.JobInput: ("GET /api/v1/jobs/{}", "200", ("input",)),
    models.JobLinks: ("GET /api/v1/jobs/{}", "200", ("links",)),
    models.Shards: ("GET /api/v1/jobs/{}", "200", ("shards",)),
    models.Result: ("GET /api/v1/jobs/{}/results", "200", ("items", "[]")),
    models.RecordError: ("GET /api/v1/jobs/{}/errors", "200", ("items", "[]")),
    models.Upload: ("POST /api/v1/uploads", "201", ()),
    models.Model: ("GET /api/v1/models/{}", "200", ()),
    models.ModelCard: ("GET /api/v1/models/{}", "200", ("card",)),
    models.Artifact: ("GET /api/v1/models/{}", "200", ("card", "artifact")),
    models.Subscription: ("GET /api/v1/subscriptions/{}", "200", ()),
    models.RetryPolicy: ("GET /api/v1/subscriptions/{}", "200", ("retryPolicy",)),
    models.DeadLetter: ("GET /api/v1/subscriptions/{}/deadletters", "200", ("items", "[]")),
    models.Redelivery: ("POST /api/v1/subscriptions/{}/redeliver", "202", ()),
    models.Event: ("GET /api/v1/events", "200", ("items", "[]")),
    models.EventData: ("GET /api/v1/events", "200", ("items", "[]", "data")),
    models.EventModelRef: ("GET /api/v1/events", "200", ("items", "[]", "data", "model")),
    models.GateVerdict: ("GET /api/v1/events", "200", ("items", "[]", "data", "gates", "[]")),
    models.EvidenceProgress: ("GET /api/v1/events", "200", ("items", "[]", "data", "evidence")),
    models.Progress: ("GET /api/v1/events", "200", ("items", "[]", "data", "evidence", "jobs")),
    models.RolloutFigures: ("GET /api/v1/events", "200", ("items", "[]", "data", "figures")),
    models.ArmFigures: ("GET /api/v1/events", "200", ("items", "[]", "data", "figures", "canary")),
    models.Usage: ("GET /api/v1/usage", "200", ()),
    models.UsageRow: ("GET /api/v1/usage", "200", ("items", "[]")),
    models.UsageTotals: ("GET /api/v1/usage", "200", ("totals",)),
    models.Quota: ("GET /api/v1/usage", "200", ("quota",)),
    models.QuotaFigure: ("GET /api/v1/usage", "200", ("quota", "recordsPerDay")),
    models.ApiKey: ("POST /api/v1/keys", "201", ()),
    models.Error: ("GET /api/v1/jobs/{}", "404", ("error",)),
}
# Fields the OpenAPI leaves out on purpose: (model, API name) with why.
NOT_IN_OPENAPI: dict[tuple[type[BaseModel], str], str] = {}


@cache
def openapi() -> dict[str, Any]:
    return create_app(lambda: None).openapi()  # type: ignore[arg-type, return-value]


def _operation(where: str) -> dict[str, Any]:
    method, path = where.split(" ", 1)
    for candidate, operations in openapi()["paths"].items():
        shape = "/".join("{}" if part.startswith("{") else part for part in candidate.split("/"))
        if shape == path and method.lower() in operations:
            return operations[method.lower()]  # type: ignore[no-any-return]
    raise AssertionError(f"the OpenAPI has no operation {where}")


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema behind $ref, and the one non-null choice of an anyOf/oneOf (an optional object)."""
    while True:
        if "$ref" in schema:
            schema = openapi()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
            continue
        choices = [s for s in schema.get("anyOf", schema.get("oneOf", [])) if s.get("type") != "null"]
        if len(choices) == 1:
            schema = choices[0]
            continue
        if len(schema.get("allOf", [])) == 1:
            schema = schema["allOf"][0]
            continue
        return schema


def described(model: type[BaseModel]) -> dict[str, Any]:
    where, status, steps = WHERE[model]
    response = _operation(where)["responses"].get(status)
    assert response is not None, f"{where} declares no {status} answer"
    schema = _resolve(response.get("content", {}).get("application/json", {}).get("schema", {}))
    for step in steps:
        if step == "[]":
            schema = _resolve(schema.get("items", {}))
        elif step == "{}":
            values = schema.get("additionalProperties")
            schema = _resolve(values if isinstance(values, dict) else {})
        else:
            schema = _resolve(schema.get("properties", {}).get(step, {}))
    return schema


# JSON Schema's types as the SDK writes them; a $ref'd object is the SDK model WHERE puts at that schema.
PYTHON_TYPE = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}


def schema_type(schema: dict[str, Any]) -> set[str]:
    """What a property's schema admits, as python annotations: {"str", "None"}, {"list[DriftColumn]"}, ..."""
    for choice in ("anyOf", "oneOf"):
        if choice in schema:
            return set().union(*(schema_type(s) for s in schema[choice]))
    target = _resolve(schema)
    if target.get("properties"):
        model = next((m for m in WHERE if described(m) is target), None)
        return {model.__name__ if model else f"an SDK model for {schema.get('$ref', 'an inline object')}"}
    kind = target.get("type")
    if kind == "array":
        return {f"list[{' | '.join(sorted(schema_type(target.get('items', {}))))}]"}
    if kind == "object":
        values = target.get("additionalProperties", True)
        return {f"dict[str, {' | '.join(sorted(schema_type(values))) if isinstance(values, dict) else 'Any'}]"}
    return {PYTHON_TYPE[kind]} if kind in PYTHON_TYPE else {"Any"}


def annotation_type(annotation: Any) -> set[str]:
    """The same for a python annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(annotation_type(a) for a in args))
    if origin is list:
        return {f"list[{' | '.join(sorted(annotation_type(args[0])))}]"}
    if origin is dict:
        return {f"dict[str, {' | '.join(sorted(annotation_type(args[1])))}]"}
    if annotation is type(None):
        return {"None"}
    if annotation is Any:
        return {"Any"}
    return {annotation.__name__}


def sdk_fields(model: type[BaseModel]) -> dict[str, bool]:
    """The model's fields by their API name, each with whether it is required."""
    return {
        (field.alias or name): field.is_required()
        for name, field in model.model_fields.items()
        if not field.exclude  # not from the body (e.g. a subscription's Location header)
    }


@pytest.mark.parametrize("model", list(WHERE), ids=lambda m: m.__name__)
def test_the_sdk_model_has_exactly_the_fields_the_openapi_declares(model: type[BaseModel]) -> None:
    schema = described(model)
    if not schema.get("properties"):
        pytest.skip(f"{WHERE[model][0]} {'.'.join(WHERE[model][2])}: the OpenAPI does not type it (yet)")
    declared = set(schema["properties"])
    ours = set(sdk_fields(model)) - {name for (kind, name) in NOT_IN_OPENAPI if kind is model}

    assert sorted(declared - ours) == [], f"{model.__name__} lacks what the OpenAPI declares"
    assert sorted(ours - declared) == [], f"{model.__name__} has fields the OpenAPI does not declare"


@pytest.mark.parametrize("model", list(WHERE), ids=lambda m: m.__name__)
def test_each_field_has_the_type_the_openapi_declares(model: type[BaseModel]) -> None:
    """A string is a str, an integer an int, an array a list, a $ref'd object the SDK model of that schema; the SDK
    may take a None the API never sends, never the other way round."""
    properties = described(model)["properties"]
    wrong = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if field.exclude or key not in properties:
            continue  # not from the body, or a missing field (the test above says so)
        declared, ours = schema_type(properties[key]), annotation_type(field.annotation)
        if declared != ours - ({"None"} - declared):
            wrong[key] = f"OpenAPI {' | '.join(sorted(declared))}, SDK {' | '.join(sorted(ours))}"

    assert wrong == {}, f"{model.__name__} reads these as another type than the API writes"


@pytest.mark.parametrize("model", list(WHERE), ids=lambda m: m.__name__)
def test_the_sdk_requires_only_what_the_api_always_sends(model: type[BaseModel]) -> None:
    schema = described(model)
    if not schema.get("properties"):
        pytest.skip("not typed in the OpenAPI")
    always = set(schema.get("required", []))
    required = {name for name, needed in sdk_fields(model).items() if needed}

    assert sorted(required - always) == [], f"{model.__name__} would refuse an answer without these"


def test_the_mapping_finds_typed_answers() -> None:
    """The agreement above checks something: most answers the SDK reads are typed in the OpenAPI."""
    typed = [model.__name__ for model in WHERE if described(model).get("properties")]

    assert {"Job", "Counts", "Result", "RecordError", "Subscription", "DeadLetter", "ApiKey"} <= set(typed), typed
