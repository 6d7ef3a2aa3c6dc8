"""The blob-backed model registry on Azurite: publish, resolve across processes, load with verification, private
namespaces, and credentials in the secret store, in no blob."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.adapters.azure_blob import AzureBlobStore
from shared.adapters.secrets import LocalSecretStore
from shared.domain.errors import AlreadyExists, UnknownModel
from shared.domain.models import ModelRef
from shared.inference.registry import BlobModelRegistry
from shared.localhost.emulators import Azurite
from tests.fakes import MODEL_NAME, model_package_dir
from tests.unit.test_registry import copy_package, tiny_card, tiny_onnx

pytestmark = pytest.mark.integration


@pytest.fixture
def blobs(azurite: Azurite) -> AzureBlobStore:
    return AzureBlobStore.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(blobs: AzureBlobStore, request: pytest.FixtureRequest) -> str:
    name = f"models-{abs(hash(request.node.name)) % 10**8}"
    blobs.ensure_container(name)
    return name


def test_publish_resolve_promote_and_load_on_azurite(blobs: AzureBlobStore, container: str, tmp_path: Path) -> None:
    operator = BlobModelRegistry(blobs, container=container)
    worker = BlobModelRegistry(blobs, container=container)
    assert operator.publish_package(model_package_dir()) is True
    assert operator.publish_package(model_package_dir()) is False
    assert worker.resolve("acme", ModelRef(MODEL_NAME)).version == "1"

    operator.publish_package(copy_package(tmp_path, version="2", description="second"))
    operator.move_alias(MODEL_NAME, "production", "2", by="alice")
    card = worker.resolve("acme", ModelRef(MODEL_NAME))  # the worker's catalogue is cached, the alias is not
    assert card.version == "2" and card.raw["description"] == "second"
    predictor = worker.load(card)
    features = card.raw["features"]
    assert predictor.predict([predictor.prepare(dict.fromkeys(features, 1.0))])[0]["label"] in card.raw["labels"]
    # The artifact and the package's other files (its drift profile) are what a loaded model holds.
    package_bytes = card.raw["artifact"]["bytes"] + sum(f["bytes"] for f in card.raw.get("files", []))
    assert worker.loaded() == {f"{MODEL_NAME}@2": package_bytes}

    operator.move_alias(MODEL_NAME, "production", "1", by="alice")
    assert worker.resolve("acme", ModelRef(MODEL_NAME)).version == "1"
    history = worker.get_aliases("acme", MODEL_NAME)["history"]
    assert [(h["from"], h["to"]) for h in history] == [(None, "1"), ("1", "2"), ("2", "1")]

    blobs.write_bytes(container, f"{MODEL_NAME}/1/model.onnx", b"tampered")
    with pytest.raises(RuntimeError, match="sha256"):
        BlobModelRegistry(blobs, container=container).load(worker.resolve("acme", ModelRef(MODEL_NAME)))


def test_private_models_and_their_credentials_on_azurite(blobs: AzureBlobStore, container: str, tmp_path: Path) -> None:
    secrets = LocalSecretStore(tmp_path / "secrets")
    registry = BlobModelRegistry(blobs, container=container, secrets=secrets, check_endpoint=lambda url: None)
    registry.publish_package(model_package_dir())
    registry.register_private("acme", tiny_card("churn"), tiny_onnx())
    with pytest.raises(AlreadyExists):
        registry.register_private("acme", tiny_card(MODEL_NAME), tiny_onnx())
    remote = {
        **tiny_card("scorer"),
        "runtime": "remote-oip",
        "endpoint": "https://models.example.com/v2/models/scorer",
        "auth": {"type": "bearer"},
    }
    registry.register_private("acme", remote, None, credential="top-secret")

    names = sorted(blob.name for blob in blobs.list_blobs(container))
    assert "tenants/acme/churn/1/card.json" in names and not [n for n in names if n.startswith("secrets/")]
    assert not [n for n in names if b"top-secret" in blobs.read_bytes(container, n)]  # in no blob at all
    card_text = blobs.read_bytes(container, "tenants/acme/scorer/1/card.json").decode()
    assert json.loads(card_text)["owner"] == "acme"
    [stored] = list((tmp_path / "secrets").iterdir())
    assert stored.read_text() == "top-secret"

    other = BlobModelRegistry(blobs, container=container)  # another process
    assert sorted(m["name"] for m in other.list_models("acme")) == sorted([MODEL_NAME, "churn", "scorer"])
    assert [m["name"] for m in other.list_models("globex")] == [MODEL_NAME]
    with pytest.raises(UnknownModel):
        other.resolve("globex", ModelRef("churn"))
    predictor = other.load(other.resolve("acme", ModelRef("churn")))
    assert predictor.predict([predictor.prepare({"f0": 1, "f1": 1, "f2": 1})])[0]["label"] in ("no", "yes")
