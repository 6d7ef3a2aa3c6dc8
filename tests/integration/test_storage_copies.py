"""The blob adapter against Azurite: copy properties are seen; the platform's account is out of a tenant SAS's reach."""

from __future__ import annotations

import base64
from datetime import timedelta

import httpx
import pytest

from shared.adapters.azure_blob import AzureBlobStore
from shared.localhost.emulators import Azurite

STORAGE_VERSION = "2021-08-06"


@pytest.fixture(scope="module")
def tenants(azurite: Azurite) -> AzureBlobStore:
    return AzureBlobStore.from_connection_string(azurite.connection_string)


@pytest.fixture(scope="module")
def platform(azurite: Azurite) -> AzureBlobStore:
    return AzureBlobStore.from_connection_string(azurite.platform_connection_string)


def _copy(url: str, source: str) -> httpx.Response:
    return httpx.put(url, headers={"x-ms-copy-source": source, "x-ms-version": STORAGE_VERSION}, timeout=30)


def test_a_blob_a_copy_wrote_shows_its_copy_properties_and_an_upload_does_not(
    azurite: Azurite, tenants: AzureBlobStore
) -> None:
    tenants.write_bytes("tenant-cp-victim", "inbox/m/u/rows.jsonl", b'{"a": 1}\n')
    tenants.ensure_container("tenant-cp-thief")
    url = tenants.upload_url("tenant-cp-thief", "inbox/m/c/rows.jsonl", expires_in=timedelta(minutes=5))
    # Azurite lets a same-account copy through on the destination's SAS alone (Azure asks the source for its own
    # authorization): the platform itself must see the copy.
    assert _copy(url, f"{azurite.blob_endpoint}/tenant-cp-victim/inbox/m/u/rows.jsonl").status_code == 202
    upload = tenants.upload_url("tenant-cp-thief", "inbox/m/p/rows.jsonl", expires_in=timedelta(minutes=5))
    assert httpx.put(upload, content=b"mine\n", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 201

    copied = tenants.get_info("tenant-cp-thief", "inbox/m/c/rows.jsonl")
    assert copied.is_copy and copied.copy_status == "success"
    assert copied.copy_source and copied.copy_source.endswith("/tenant-cp-victim/inbox/m/u/rows.jsonl")
    assert not tenants.get_info("tenant-cp-thief", "inbox/m/p/rows.jsonl").is_copy
    listed = {b.name: b.is_copy for b in tenants.list_blobs("tenant-cp-thief", prefix="inbox/")}
    assert listed == {"inbox/m/c/rows.jsonl": True, "inbox/m/p/rows.jsonl": False}


def test_the_platform_account_is_another_account_no_tenant_sas_can_copy_from(
    azurite: Azurite, tenants: AzureBlobStore, platform: AzureBlobStore
) -> None:
    platform.write_bytes("models", "tenants/owner/m/1/model.onnx", b"secret weights")
    assert "models" not in set(tenants.list_containers(prefix="models"))  # not the tenants' account's
    tenants.ensure_container("tenant-cp-thief2")
    source = f"{azurite.platform_blob_endpoint}/models/tenants/owner/m/1/model.onnx"

    url = tenants.upload_url("tenant-cp-thief2", "inbox/m/x/a.jsonl", expires_in=timedelta(minutes=5))
    answer = _copy(url, source)
    assert answer.status_code == 403 and answer.headers["x-ms-error-code"] == "CannotVerifyCopySource"
    block = base64.b64encode(b"0001").decode()
    staged = httpx.put(
        f"{url}&comp=block&blockid={block}",
        headers={"x-ms-copy-source": source, "x-ms-version": STORAGE_VERSION, "Content-Length": "0"},
    )
    assert staged.status_code == 403  # Put Block From URL: the same rule
    # The tenant's SAS names its one blob in the tenants' account: pointed at the platform account it is refused.
    other = url.replace("/devstoreaccount1/tenant-cp-thief2/inbox/m/x/a.jsonl", "/aiaasplatform/models/evil.onnx")
    assert httpx.put(other, content=b"x", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403
    assert [b.name for b in platform.list_blobs("models")] == ["tenants/owner/m/1/model.onnx"]


def test_an_upload_sas_grants_create_and_write_of_one_blob_only(tenants: AzureBlobStore) -> None:
    tenants.ensure_container("tenant-cp-scope")
    url = tenants.upload_url("tenant-cp-scope", "inbox/m/s/rows.jsonl", expires_in=timedelta(minutes=5))
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    assert query["sp"] == "cw" and query["sr"] == "b"  # no read, list, delete, tags; this blob, not the container
    assert httpx.put(url, content=b"x\n", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 201
    assert httpx.get(url).status_code == 403
    assert httpx.delete(url).status_code == 403
    listing = url.replace("/inbox/m/s/rows.jsonl", "") + "&restype=container&comp=list"
    assert httpx.get(listing).status_code == 403
