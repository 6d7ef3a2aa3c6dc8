"""The committed Postman collection is what scripts/postman_from_openapi.py makes of the current API, one request per
operation."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("postman_from_openapi", REPO / "scripts/postman_from_openapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def test_the_committed_collection_is_what_the_script_makes_of_the_current_api() -> None:
    committed = (REPO / "docs/postman/aiaas.postman_collection.json").read_text()
    assert committed == GENERATOR.render(), "stale: run .venv/bin/python scripts/postman_from_openapi.py"


def test_every_operation_has_one_request_with_tests_in_its_tag_folder() -> None:
    doc: dict[str, Any] = GENERATOR.openapi()
    collection = GENERATOR.build(doc)
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    assert {v["key"] for v in collection["variable"]} >= {"baseUrl", "apiKey"}
    assert collection["auth"]["type"] == "bearer"
    assert collection["auth"]["bearer"][0]["value"] == "{{apiKey}}"
    operations = {
        (method.upper(), path.removeprefix("/api"))
        for path, ops in doc["paths"].items()
        for method in ops
        if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    }
    requests = [item for folder in collection["item"][1:] for item in folder["item"]]
    named = {(r["request"]["method"], r["name"].rsplit(" ", 1)[1].rstrip(")")) for r in requests}
    assert named == operations and len(requests) == len(operations)
    for item in requests + collection["item"][0]["item"]:
        tests = next(e for e in item["event"] if e["listen"] == "test")["script"]["exec"]
        assert any("to.have.status(" in line for line in tests), item["name"]
    for item in requests:
        assert "{{baseUrl}}" in item["request"]["url"]["raw"]


def test_a_typed_answer_has_its_required_fields_checked() -> None:
    doc = {
        "info": {"title": "t"},
        "paths": {
            "/api/v1/things/{job_id}": {
                "get": {
                    "tags": ["Things"],
                    "summary": "Get Thing",
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                        "404": {},
                    },
                }
            }
        },
        "components": {"schemas": {"Thing": {"type": "object", "required": ["jobId", "status"]}}},
    }
    (item,) = GENERATOR.build(doc)["item"][1]["item"]
    assert item["request"]["url"]["raw"] == "{{baseUrl}}/v1/things/{{jobId}}"
    script = "\n".join(item["event"][0]["script"]["exec"])
    assert "to.have.status(200)" in script and json.dumps(["jobId", "status"]) in script
