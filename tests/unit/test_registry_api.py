"""The registry's HTTP routes over the fakes: private registration, isolation (404 for others), alias moves."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.tenants import container_for
from shared.services.platform import Platform
from tests.fakes import MODEL_NAME, add_tenant
from tests.unit.test_api import _rekey, assert_error, auth
from tests.unit.test_registry import tiny_card, tiny_onnx


@pytest.fixture
def keys(platform: Platform) -> dict[str, str]:
    return {"acme": _rekey(platform, "acme"), "globex": add_tenant(platform, "globex")}


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def register(client: TestClient, key: str, card: dict[str, Any], artifact: bytes | None = None, **body: Any) -> Any:
    payload = {"card": card, **body}
    if artifact is not None:
        payload["artifactBase64"] = base64.b64encode(artifact).decode()
    return client.post("/api/v1/models", json=payload, headers=auth(key))


def test_a_tenant_registers_a_private_model_only_it_can_see(client: TestClient, keys: dict[str, str]) -> None:
    answer = register(client, keys["acme"], tiny_card("churn"), tiny_onnx())
    assert answer.status_code == 201, answer.text
    model = answer.json()
    assert model["name"] == "churn" and model["visibility"] == "private" and model["versions"] == ["1"]
    assert model["card"]["owner"] == "acme" and model["card"]["artifact"]["bytes"] == len(tiny_onnx())

    acme, globex = auth(keys["acme"]), auth(keys["globex"])
    assert "churn" in [m["name"] for m in client.get("/api/v1/models", headers=acme).json()["items"]]
    assert "churn" not in [m["name"] for m in client.get("/api/v1/models", headers=globex).json()["items"]]
    assert client.get("/api/v1/models/churn", headers=acme).status_code == 200
    assert_error(client.get("/api/v1/models/churn", headers=globex), 404, "UnknownModel")
    assert_error(client.get("/api/v1/models/churn/aliases", headers=globex), 404, "UnknownModel")
    upload = {"model": "churn", "filename": "rows.jsonl"}
    assert client.post("/api/v1/uploads", json=upload, headers=acme).status_code == 201
    assert_error(client.post("/api/v1/uploads", json=upload, headers=globex), 404, "UnknownModel")
    move = client.put("/api/v1/models/churn/aliases/production", json={"version": "1"}, headers=globex)
    assert_error(move, 404, "UnknownModel")


def test_the_artifact_may_come_from_a_blob_in_the_callers_own_container(
    client: TestClient, keys: dict[str, str], platform: Platform
) -> None:
    platform.blobs.write_bytes(container_for("acme"), "models/churn.onnx", tiny_onnx())
    answer = register(client, keys["acme"], tiny_card("churn"), artifactBlobPath="models/churn.onnx")
    assert answer.status_code == 201, answer.text
    # Another tenant names the same path: it is looked up in its own container, where there is nothing.
    other = register(client, keys["globex"], tiny_card("churn"), artifactBlobPath="models/churn.onnx")
    assert_error(other, 400, "BlobNotFound")


@pytest.mark.parametrize(
    ("card", "artifact", "extra", "status", "code"),
    [
        (tiny_card(features=5), tiny_onnx(), {}, 400, "InvalidModelPackage"),
        (tiny_card(), b"not onnx", {}, 400, "InvalidModelPackage"),
        (tiny_card(), None, {}, 400, "InvalidModelPackage"),
        (tiny_card(MODEL_NAME), tiny_onnx(), {}, 409, "ModelNameTaken"),
        (tiny_card(), None, {"artifactBase64": "***"}, 400, "InvalidModelPackage"),
        (tiny_card(), tiny_onnx(), {"artifactBlobPath": "x.onnx"}, 400, "InvalidModelPackage"),
        (tiny_card(), tiny_onnx(), {"unexpected": 1}, 400, "InvalidRequest"),
    ],
)
def test_a_bad_registration_is_a_4xx_with_a_reason(
    client: TestClient,
    keys: dict[str, str],
    card: dict[str, Any],
    artifact: bytes | None,
    extra: dict[str, Any],
    status: int,
    code: str,
) -> None:
    assert_error(register(client, keys["acme"], card, artifact, **extra), status, code)


def test_versions_are_immutable_through_the_api(client: TestClient, keys: dict[str, str]) -> None:
    assert register(client, keys["acme"], tiny_card("churn"), tiny_onnx()).status_code == 201
    assert register(client, keys["acme"], tiny_card("churn"), tiny_onnx()).status_code == 201  # same bytes: no-op
    other = tiny_onnx(features=3, labels=2, width=3, int_input=False)[:-1] + b"\x00"
    assert_error(register(client, keys["acme"], tiny_card("churn"), other), 409, "VersionExists")


def test_the_owner_moves_its_aliases_and_sees_the_history(client: TestClient, keys: dict[str, str]) -> None:
    acme = auth(keys["acme"])
    register(client, keys["acme"], tiny_card("churn", "1"), tiny_onnx())
    register(client, keys["acme"], tiny_card("churn", "2", description="second"), tiny_onnx())
    moved = client.put("/api/v1/models/churn/aliases/production", json={"version": "2"}, headers=acme)
    assert moved.status_code == 200, moved.text
    assert moved.json()["aliases"] == {"production": "2"}
    client.put("/api/v1/models/churn/aliases/canary", json={"version": "1"}, headers=acme)
    back = client.put("/api/v1/models/churn/aliases/production", json={"version": "1"}, headers=acme).json()

    listed = client.get("/api/v1/models/churn/aliases", headers=acme).json()
    assert listed["aliases"] == back["aliases"] == {"production": "1", "canary": "1"}
    assert [(h["alias"], h["from"], h["to"], h["by"]) for h in listed["history"]] == [
        ("production", None, "1", "tenant:acme"),
        ("production", "1", "2", "tenant:acme"),
        ("canary", None, "1", "tenant:acme"),
        ("production", "2", "1", "tenant:acme"),
    ]
    assert client.get("/api/v1/models/churn", headers=acme).json()["defaultVersion"] == "1"
    assert_error(client.put("/api/v1/models/churn/aliases/production", json={"version": "9"}, headers=acme), 404)
    assert_error(client.put("/api/v1/models/churn/aliases/bad alias", json={"version": "1"}, headers=acme), 400)


def test_public_aliases_are_the_operators(client: TestClient, keys: dict[str, str]) -> None:
    acme = auth(keys["acme"])
    answer = client.put(f"/api/v1/models/{MODEL_NAME}/aliases/production", json={"version": "1"}, headers=acme)
    assert_error(answer, 400, "NotModelOwner")
    history = client.get(f"/api/v1/models/{MODEL_NAME}/aliases", headers=acme).json()
    assert history["aliases"] == {"production": "1"} and history["history"][0]["to"] == "1"
    assert_error(client.get("/api/v1/models/nope/aliases", headers=acme), 404, "UnknownModel")
    assert client.get(f"/api/v1/models/{MODEL_NAME}/aliases").status_code == 401
