"""Container models in Azure Container Registry against the azure-containerregistry SDK's own requests: a real
ContainerRegistryClient whose azure-core transport records every HttpRequest and answers with canned ACR JSON
(no registry is reachable from here): the AAD -> ACR token exchange, ACR's listing API, and labels -> cards."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

pytest.importorskip("azure.containerregistry")

import requests

from shared.adapters.acr import MAX_CONFIG_BYTES, RegistryImageLister, registry_options
from shared.domain.models import ModelRef
from shared.inference.containers import ContainerModels
from shared.inference.registry import BlobModelRegistry
from tests.fakes import InMemoryBlobStore
from tests.sdk_transport import FakeCredential, RecordingTransport

ENDPOINT = "https://aiaasmodels.azurecr.io"
CHALLENGE = 'Bearer realm="https://aiaasmodels.azurecr.io/oauth2/token",service="aiaasmodels.azurecr.io",scope="{}"'


def _jwt(claims: dict[str, Any]) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{part}.sig"


def _digest(doc: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def image(labels: dict[str, str] | None, size: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": labels}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(config),
            "size": size or len(json.dumps(config)),
        },
        "layers": [],
    }
    return manifest, config


SCORER = {
    "ai.aiaas.model": "churn-scorer",
    "ai.aiaas.task": "tabular-classification",
    "ai.aiaas.input-types": ".jsonl,.csv",
    "ai.aiaas.endpoint": "https://churn.example-apps.azurecontainerapps.io/v2/models/churn",
    "ai.aiaas.tag.team": "growth",
    "ai.aiaas.card": json.dumps({"features": ["f0", "f1", "f2"], "labels": ["no", "yes"]}),
    "org.opencontainers.image.description": "Churn scorer, served by Triton",
}


class FakeAcr:
    """ACR's data plane as the SDK sees it: a challenge without a token, the token exchange, and the catalogue."""

    def __init__(self, repositories: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]]) -> None:
        self.repositories = repositories  # repo -> tag -> (manifest, config)
        self.blobs = {_digest(c): c for tags in repositories.values() for _, c in tags.values()}
        self.manifests = {_digest(m): m for tags in repositories.values() for m, _ in tags.values()}
        self.token_forms: list[dict[str, list[str]]] = []

    def reply(self, request: requests.PreparedRequest) -> Any:
        path = unquote(urlsplit(request.url or "").path)
        if path == "/oauth2/exchange":
            self.token_forms.append(parse_qs(str(request.body)))
            return 200, {"refresh_token": _jwt({"exp": int(time.time()) + 3600})}
        if path == "/oauth2/token":
            self.token_forms.append(parse_qs(str(request.body)))
            return 200, {"access_token": "acr-access-token"}
        if request.headers.get("Authorization") != "Bearer acr-access-token":
            return 401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": CHALLENGE.format("x")}
        if path == "/acr/v1/_catalog":
            return 200, {"repositories": sorted(self.repositories)}
        for repo, tags in self.repositories.items():
            if path == f"/acr/v1/{repo}/_manifests":
                manifests = [
                    {"digest": _digest(m), "tags": [tag], "mediaType": m["mediaType"]} for tag, (m, _) in tags.items()
                ]
                return 200, {"registry": "aiaasmodels.azurecr.io", "imageName": repo, "manifests": manifests}
            if path.startswith(f"/v2/{repo}/manifests/"):
                manifest = self.manifests[path.rsplit("/", 1)[1]]
                size = str(len(json.dumps(manifest)))
                headers = {"content-type": manifest["mediaType"], "content-length": size}
                return 200, manifest, {**headers, "docker-content-digest": _digest(manifest)}
            if path.startswith(f"/v2/{repo}/blobs/"):
                config = self.blobs[path.rsplit("/", 1)[1]]
                size = len(json.dumps(config))
                return 206, config, {"content-range": f"bytes 0-{size - 1}/{size}", "content-length": str(size)}
        return 404, {"errors": [{"code": "NAME_UNKNOWN"}]}


def lister(acr: FakeAcr) -> tuple[RegistryImageLister, RecordingTransport, FakeCredential]:
    transport = RecordingTransport(acr.reply)
    credential = FakeCredential()
    return RegistryImageLister(ENDPOINT, credential, transport=transport), transport, credential


def test_labelled_images_in_acr_become_cards_through_acr_listing_and_the_token_exchange() -> None:
    acr = FakeAcr({"models/churn": {"1": image(SCORER), "2": image({**SCORER, "ai.aiaas.version": "2.0"})}})
    images, transport, credential = lister(acr)
    models = ContainerModels(images)
    cards = {card.version: card for card in models.cards()}
    assert sorted(cards) == ["1", "2.0"] and not models.refused()
    card = cards["1"].raw
    assert card["runtime"] == "remote-oip" and card["endpoint"] == SCORER["ai.aiaas.endpoint"]
    assert card["features"] == ["f0", "f1", "f2"] and card["inputTypes"] == [".jsonl", ".csv"]
    assert card["tags"] == {"team": "growth"} and card["description"] == "Churn scorer, served by Triton"
    assert card["handler"] == "tabular-classifier" and "owner" not in card
    assert card["source"]["container"]["registry"] == "aiaasmodels.azurecr.io"
    assert card["source"]["container"]["digest"].startswith("sha256:")
    # The managed identity's AAD token is asked for ACR's audience and traded for ACR tokens by the SDK.
    assert ("https://containerregistry.azure.net/.default",) in credential.scopes
    assert acr.token_forms[0]["grant_type"] == ["access_token"]
    assert acr.token_forms[0]["service"] == ["aiaasmodels.azurecr.io"]
    paths = [(r.method, unquote(urlsplit(r.url).path)) for r in transport.requests]
    assert ("GET", "/acr/v1/_catalog") in paths and ("GET", "/acr/v1/models/churn/_manifests") in paths
    blob_tokens = {r.headers.get("Authorization") for r in transport.requests if "/blobs/" in r.url}
    assert "Bearer acr-access-token" in blob_tokens  # the config blobs are read with the exchanged ACR token
    # A second listing reads no manifest or config again: labels are kept by manifest digest.
    before = len(transport.requests)
    models.refresh()
    models.cards()
    again = [urlsplit(r.url).path for r in transport.requests[before:]]
    assert not [p for p in again if p.startswith("/v2/")]


def test_images_without_model_labels_are_ignored_and_a_bad_card_is_refused_with_its_reason() -> None:
    acr = FakeAcr(
        {
            "base/python": {"3.11": image(None)},
            "tools/other": {"1": image({"maintainer": "ops"})},
            "models/broken": {"1": image({**SCORER, "ai.aiaas.model": "broken", "ai.aiaas.card": "{features"})},
            "models/churn": {"1": image(SCORER)},
        }
    )
    models = ContainerModels(lister(acr)[0])
    assert [card.name for card in models.cards()] == ["churn-scorer"]
    [refusal] = models.refused()
    assert refusal.image == "aiaasmodels.azurecr.io/models/broken:1"
    assert "ai.aiaas.card is not JSON" in refusal.reason


def test_an_oversized_config_blob_is_not_read() -> None:
    acr = FakeAcr({"models/huge": {"1": image(SCORER, size=MAX_CONFIG_BYTES + 1)}})
    images, transport, _ = lister(acr)
    models = ContainerModels(images)
    assert models.cards() == []
    assert "over" in models.refused()[0].reason
    assert not [r for r in transport.requests if "/blobs/" in r.url]


def test_the_registry_lists_and_resolves_container_models_beside_packages() -> None:
    acr = FakeAcr({"models/churn": {"1": image(SCORER)}})
    registry = BlobModelRegistry(InMemoryBlobStore(), containers=ContainerModels(lister(acr)[0]))
    [model] = registry.list_models("acme", task="tabular-classification", tags={"team": "growth"})
    assert model["name"] == "churn-scorer" and model["inputTypes"] == [".jsonl", ".csv"]
    assert registry.list_models("acme", task="text-embedding") == []
    assert registry.resolve("acme", ModelRef("churn-scorer")).raw["endpoint"] == SCORER["ai.aiaas.endpoint"]


def test_plain_http_is_for_a_loopback_registry_only() -> None:
    assert registry_options("https://x.azurecr.io") == {}
    assert registry_options("http://127.0.0.1:5000") == {"enforce_https": False}
    with pytest.raises(ValueError, match="https"):
        registry_options("http://registry.example.com")


class FlakyLister:
    def __init__(self, images: RegistryImageLister) -> None:
        self.images, self.down = images, False

    def list_images(self) -> Any:
        if self.down:
            raise ConnectionError("registry unreachable")
        return self.images.list_images()


def test_an_unreachable_registry_keeps_the_known_container_models_and_the_blob_catalogue() -> None:
    flaky = FlakyLister(lister(FakeAcr({"models/churn": {"1": image(SCORER)}}))[0])
    models = ContainerModels(flaky)
    registry = BlobModelRegistry(InMemoryBlobStore(), containers=models)
    assert [m["name"] for m in registry.list_models("acme")] == ["churn-scorer"]
    flaky.down = True
    models.refresh()
    registry.refresh()
    assert [m["name"] for m in registry.list_models("acme")] == ["churn-scorer"]
