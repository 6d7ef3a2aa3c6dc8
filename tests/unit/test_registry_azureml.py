"""The Azure ML model source against the azure-ai-ml SDK's own requests: a real MLClient whose azure-core transport
records every HttpRequest and answers with canned JSON (no workspace is reachable from here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("azure.ai.ml")

import requests

from shared.adapters.azureml import AzureMLModelSource, build_package
from shared.domain.errors import InvalidInput, NotFound
from shared.domain.models import ModelRef
from shared.inference.registry import BlobModelRegistry
from tests.fakes import InMemoryBlobStore
from tests.sdk_transport import FakeCredential, RecordingTransport
from tests.unit.test_registry import tiny_onnx

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
REGISTRY_SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"


def model_version(version: str, **properties: str) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
        f"/workspaces/ws/models/churn-Model/versions/{version}",
        "name": version,
        "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
        "properties": {
            "description": f"Churn v{version}",
            "tags": {"task": "tabular-classification", "team": "growth"},
            "properties": {
                "handler": "tabular-classifier",
                "features": '["f0", "f1", "f2"]',
                "labels": '["no", "yes"]',
                "onnx": '{"inputName": "input", "probabilitiesOutput": "probabilities"}',
                **properties,
            },
            "modelType": "custom_model",
            "modelUri": "azureml://subscriptions/s/resourcegroups/rg/workspaces/ws/datastores/blob/paths/churn/",
            "flavors": {},
            "isAnonymous": False,
            "isArchived": False,
        },
        "systemData": {"createdAt": "2026-01-02T03:04:05Z", "createdBy": "data-scientist@example.com"},
    }


def reply(request: requests.PreparedRequest) -> tuple[int, dict[str, Any]]:
    path = urlsplit(request.url or "").path
    if path.endswith("/discovery"):
        return 200, {
            "registryName": "shared-models",
            "primaryRegion": "westeurope",
            "regions": ["westeurope"],
            "subscriptionId": REGISTRY_SUBSCRIPTION,
            "resourceGroup": "registry-rg",
            "primaryRegionResourceProviderUri": "https://westeurope.api.azureml.ms/",
        }
    if path.endswith("/versions/404"):
        return 404, {"error": {"code": "NotFound", "message": "no such version"}}
    if "/versions/" in path:
        return 200, model_version(path.rsplit("/", 1)[1])
    return 200, {"value": [model_version("2"), model_version("1")]}


def query(request: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url).query)


def test_workspace_get_and_list_build_the_arm_requests() -> None:
    transport = RecordingTransport(reply)
    source = AzureMLModelSource.for_workspace(FakeCredential(), SUBSCRIPTION, "rg", "ws", transport=transport)

    model = source.get_model("churn-Model", version="3")
    assert (model.name, model.version, model.description) == ("churn-Model", "3", "Churn v3")
    assert model.tags["team"] == "growth" and model.card_field("features") == ["f0", "f1", "f2"]
    versions = [m.version for m in source.list_models("churn-Model", tags={"team": "growth"})]
    assert versions == ["2", "1"]
    assert source.list_models("churn-Model", tags={"team": "other"}) == []

    base = (
        f"https://management.azure.com/subscriptions/{SUBSCRIPTION}/resourceGroups/rg"
        "/providers/Microsoft.MachineLearningServices/workspaces/ws/models/churn-Model/versions"
    )
    get, listing, _ = transport.requests
    assert get.method == "GET" and get.url.split("?")[0] == f"{base}/3"
    assert query(get)["api-version"] == ["2023-08-01-preview"]
    assert get.headers["Authorization"] == "Bearer test-token"
    assert listing.method == "GET" and listing.url.split("?")[0] == base
    assert query(listing) == {"api-version": ["2023-08-01-preview"], "listViewType": ["ActiveOnly"]}
    with pytest.raises(NotFound):
        source.get_model("churn-Model", version="404")


def test_registry_get_and_list_discover_the_region_first() -> None:
    transport = RecordingTransport(reply)
    source = AzureMLModelSource.for_registry(FakeCredential(), "shared-models", transport=transport)
    assert source.get_model("churn-Model", version="1").version == "1"
    assert [m.version for m in source.list_models("churn-Model")] == ["2", "1"]

    discovery, get, listing = transport.requests
    assert discovery.method == "GET"
    assert discovery.url.split("?")[0].endswith("/registrymanagement/v1.0/registries/shared-models/discovery")
    base = (
        f"https://westeurope.api.azureml.ms/mferp/managementfrontend/subscriptions/{REGISTRY_SUBSCRIPTION}"
        "/resourceGroups/registry-rg/providers/Microsoft.MachineLearningServices/registries/shared-models"
        "/models/churn-Model/versions"
    )
    assert get.url.split("?")[0] == f"{base}/1" and listing.url.split("?")[0] == base
    assert query(get)["api-version"] == query(listing)["api-version"] == ["2021-10-01-dataplanepreview"]


def test_download_builds_a_package_the_registry_publishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = RecordingTransport(reply)
    source = AzureMLModelSource.for_workspace(FakeCredential(), SUBSCRIPTION, "rg", "ws", transport=transport)

    def download(name: str, version: str, download_path: str) -> None:
        # Where the SDK puts a folder-shaped model: <download_path>/<name>/<folder>/...
        folder = Path(download_path) / name / "churn"
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(tiny_onnx())
        (folder / "MLmodel").write_text("flavors: {}")

    monkeypatch.setattr(source._client.models, "download", download)
    package = source.download_package("churn-Model", tmp_path / "packages", version="2")

    card = json.loads((package / "card.json").read_text())
    assert package == tmp_path / "packages" / "churn-model" / "2"
    assert card["name"] == "churn-model" and card["version"] == "2" and card["description"] == "Churn v2"
    assert card["task"] == "tabular-classification" and card["inputTypes"] == [".jsonl", ".csv"]
    assert card["tags"] == {"team": "growth"}
    assert card["source"]["azureml"]["workspace"] == "ws" and card["source"]["azureml"]["version"] == "2"
    assert card["source"]["azureml"]["createdBy"] == "data-scientist@example.com"

    registry = BlobModelRegistry(InMemoryBlobStore())
    assert registry.publish_package(package, tenant="acme") is True  # checked by loading, as a tenant's would be
    predictor = registry.load(registry.resolve("acme", ModelRef("churn-model")))
    assert predictor.predict([predictor.prepare({"f0": 1, "f1": 2, "f2": 3})])[0]["label"] in ("no", "yes")


def test_a_model_without_one_onnx_file_or_a_handler_is_refused(tmp_path: Path) -> None:
    from shared.adapters.azureml import AzureMLModel

    model = AzureMLModel(name="m", version="1", properties={"handler": "tabular-classifier"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="exactly one"):
        build_package(model, empty, tmp_path / "out")
    (empty / "model.onnx").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="handler"):
        build_package(AzureMLModel(name="m", version="1"), empty, tmp_path / "out")
