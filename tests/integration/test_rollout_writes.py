"""The conditional writes rollouts rely on, against Azurite: If-Match on aliases.json refuses a stale ETag, and two
registries updating a rollout's evidence at once both land."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.azure_blob import AzureBlobStore
from shared.domain.errors import PreconditionFailed
from shared.inference.registry import BlobModelRegistry
from shared.localhost.emulators import Azurite
from tests.fakes import MODEL_NAME, model_package_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def blobs(azurite: Azurite) -> AzureBlobStore:
    return AzureBlobStore.from_connection_string(azurite.connection_string)


def test_replace_bytes_is_if_match(blobs: AzureBlobStore) -> None:
    blobs.ensure_container("conditional")
    first = blobs.write_bytes("conditional", "doc.json", b"1")
    second = blobs.replace_bytes("conditional", "doc.json", b"2", etag=first)
    with pytest.raises(PreconditionFailed):
        blobs.replace_bytes("conditional", "doc.json", b"3", etag=first)  # the ETag it read is gone
    assert blobs.read_bytes("conditional", "doc.json") == b"2"
    assert blobs.replace_bytes("conditional", "doc.json", b"4", etag=second) != second
    with pytest.raises(PreconditionFailed):  # 412 for a blob that is not there, as in Azure
        blobs.replace_bytes("conditional", "gone.json", b"5", etag=second)


def test_two_registries_counting_at_once_both_land(blobs: AzureBlobStore) -> None:
    container = "models-rollout-writes"
    blobs.ensure_container(container)
    one, other = BlobModelRegistry(blobs, container=container), BlobModelRegistry(blobs, container=container)
    one.publish_package(model_package_dir())
    nested: list[bool] = []

    def count(doc: dict[str, Any]) -> dict[str, Any]:
        if not nested:  # the other worker's whole update lands between this read and this write
            nested.append(True)
            other.update_aliases(MODEL_NAME, add_one)
        return add_one(doc)

    def add_one(doc: dict[str, Any]) -> dict[str, Any]:
        doc["rollouts"]["production"] = {"jobs": (doc["rollouts"].get("production") or {}).get("jobs", 0) + 1}
        return doc

    one.update_aliases(MODEL_NAME, count)
    assert one.get_aliases("acme", MODEL_NAME)["rollouts"]["production"] == {"jobs": 2}
