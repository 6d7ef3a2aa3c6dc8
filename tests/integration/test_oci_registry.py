"""Container models against a real OCI registry (the CNCF distribution registry, Debian's docker-registry): images
pushed with labels are found by the azure-containerregistry client, become cards, are listed by the API and
answer /api/v2 infer through the Open Inference Protocol runtime; the "container" is a local KServe V2 server."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from shared.adapters.acr import RegistryImageLister
from shared.api.app import create_app
from shared.domain.models import ModelRef
from shared.inference.containers import ContainerModels
from shared.inference.registry import BlobModelRegistry
from shared.localhost.oci_registry import OciRegistry, registry_binary
from tests.fakes import InMemorySecretStore, add_tenant, make_platform
from tests.unit.test_registry_remote import V2Server, loopback_allowed  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


def scorer_labels(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "ai.aiaas.model": "scorer",
        "ai.aiaas.task": "tabular-classification",
        "ai.aiaas.input-types": ".jsonl,.csv",
        "ai.aiaas.endpoint": f"{endpoint}/v2/models/scorer",
        "ai.aiaas.tag.serving": "kserve",
        "ai.aiaas.card": json.dumps({"features": ["a", "b", "c"], "labels": ["no", "yes"]}),
        **extra,
    }


def shout_labels(endpoint: str) -> dict[str, str]:
    return {
        "ai.aiaas.model": "shout",
        "ai.aiaas.task": "text-transform",
        "ai.aiaas.input-types": '[".txt", ".jsonl"]',
        "ai.aiaas.endpoint": f"{endpoint}/v2/models/shout",
        "ai.aiaas.description": "Upper-cases a text",
    }


@pytest.fixture(scope="module")
def registry() -> Iterator[OciRegistry]:
    try:
        registry_binary()
    except RuntimeError as err:
        pytest.fail(str(err))
    with OciRegistry() as running:
        yield running


@pytest.fixture
def v2(loopback_allowed: None) -> Iterator[V2Server]:  # noqa: F811
    with V2Server() as server:
        yield server


@pytest.fixture
def models(registry: OciRegistry, v2: V2Server) -> ContainerModels:
    registry.push_image("models/scorer", "1", scorer_labels(v2.url))
    registry.push_image("models/scorer", "2", scorer_labels(v2.url, **{"ai.aiaas.tag.serving": "triton"}))
    registry.push_image("models/shout", "latest", {**shout_labels(v2.url), "ai.aiaas.version": "3"})
    registry.push_image("base/python", "3.11", None, layer=b"not a model")
    registry.push_image("tools/lint", "1", {"maintainer": "ops@example.com"})
    registry.push_image(
        "models/broken", "1", {**shout_labels(v2.url), "ai.aiaas.model": "broken", "ai.aiaas.card": "[1"}
    )
    registry.push_image(
        "models/nowhere", "1", {**shout_labels(v2.url), "ai.aiaas.model": "nowhere", "ai.aiaas.endpoint": "ftp://x/y"}
    )
    return ContainerModels(RegistryImageLister(registry.url))


def test_labelled_images_are_found_by_task_and_input_type(models: ContainerModels, v2: V2Server) -> None:
    assert sorted((c.name, c.version) for c in models.cards()) == [("scorer", "1"), ("scorer", "2"), ("shout", "3")]
    assert sorted(c.version for c in models.find(task="tabular-classification")) == ["1", "2"]
    assert [c.name for c in models.find(input_type=".txt")] == ["shout"]
    assert sorted(c.name for c in models.find(input_type=".jsonl")) == ["scorer", "scorer", "shout"]
    assert models.find(task="text-transform", input_type=".csv") == []
    shout = models.find(task="text-transform")[0].raw
    assert shout["endpoint"] == f"{v2.url}/v2/models/shout" and shout["description"] == "Upper-cases a text"
    assert shout["source"]["container"]["repository"] == "models/shout"
    assert shout["source"]["container"]["tag"] == "latest"
    assert shout["source"]["container"]["digest"].startswith("sha256:")


def test_images_without_labels_are_ignored_and_bad_cards_are_refused_with_a_reason(models: ContainerModels) -> None:
    names = {c.name for c in models.cards()}
    assert not names & {"python", "lint", "broken", "nowhere"}
    refused = {r.image.split("/", 1)[1]: r.reason for r in models.refused()}
    assert set(refused) == {"models/broken:1", "models/nowhere:1"}  # the unlabelled images are no refusal
    assert "ai.aiaas.card is not JSON" in refused["models/broken:1"]
    assert "must be an http(s) URL of an OIP model" in refused["models/nowhere:1"]


def test_a_retagged_image_is_seen_at_the_next_listing(registry: OciRegistry, models: ContainerModels) -> None:
    before = {c.version: c.raw["source"]["container"]["digest"] for c in models.cards() if c.name == "scorer"}
    registry.push_image("models/scorer", "1", scorer_labels("https://moved.example", **{"ai.aiaas.version": "1"}))
    models.refresh()
    after = {c.version: c.raw for c in models.cards() if c.name == "scorer"}
    assert after["1"]["source"]["container"]["digest"] != before["1"]
    assert after["1"]["endpoint"] == "https://moved.example/v2/models/scorer"


def test_a_container_model_is_listed_by_the_api_and_answers_v2_infer(models: ContainerModels, v2: V2Server) -> None:
    plat = make_platform()
    registry = BlobModelRegistry(plat.blobs, secrets=InMemorySecretStore(), containers=models)
    plat = dataclasses.replace(plat, models=registry)
    key = add_tenant(plat, "acme")
    client = TestClient(create_app(lambda: plat), raise_server_exceptions=False)
    auth = {"Authorization": f"Bearer {key}"}

    listed = client.get("/api/v1/models", params={"task": "tabular-classification"}, headers=auth)
    assert listed.status_code == 200, listed.text
    [scorer] = [m for m in listed.json()["items"] if m["name"] == "scorer"]
    assert scorer["versions"] == ["1", "2"] and scorer["defaultVersion"] == "2"
    assert scorer["inputTypes"] == [".jsonl", ".csv"]
    # Tags filter on the default version's card (v2, labelled as triton-served).
    triton = client.get("/api/v1/models", params={"tag": "serving:triton"}, headers=auth).json()["items"]
    assert [m["name"] for m in triton] == ["scorer"]
    assert client.get("/api/v1/models", params={"tag": "serving:kserve"}, headers=auth).json()["items"] == []
    assert plat.models.resolve("acme", ModelRef.parse("scorer@1")).raw["tags"] == {"serving": "kserve"}

    body = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 1, 1, 2, 2, 2]}]}
    answer = client.post("/api/v2/models/scorer/infer", json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["label"]["data"] == ["no", "yes"]  # the server's sigmoid(sum - 3): 0.5 for [1,1,1], 0.95 for [2,2,2]
    [sent] = [r for r in v2.requests if r["path"] == "/v2/models/scorer/infer"]
    assert sent["body"]["inputs"][0]["shape"] == [2, 3] and sent["body"]["inputs"][0]["data"] == [1, 1, 1, 2, 2, 2]

    text = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
    shouted = client.post("/api/v2/models/shout/versions/3/infer", json=text, headers=auth)
    assert shouted.status_code == 200, shouted.text
    assert {o["name"]: o["data"] for o in shouted.json()["outputs"]}["upper"] == ["HELLO"]

    unknown = client.post("/api/v2/models/broken/infer", json=text, headers=auth)
    assert unknown.status_code == 404
