"""The secret stores: names as Key Vault allows them, the local store's files (0600, out of any container), and
KeyVaultSecretStore against the azure-keyvault-secrets SDK's own requests (a real SecretClient whose azure-core
transport records every HttpRequest and answers with canned JSON: no vault is reachable from here)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.keyvault.secrets._shared.client_base import DEFAULT_VERSION

from shared.adapters.secrets import KeyVaultSecretStore, LocalSecretStore, vault_name
from shared.domain.errors import NotFound
from tests.sdk_transport import Answer, FakeCredential, RecordingTransport, Reply

VAULT = "https://kv-test.vault.azure.net"
CHALLENGE = 'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"'


# Names


def test_names_are_what_key_vault_accepts_and_owners_never_share_one() -> None:
    assert vault_name("acme", "oip-abc") == "t4-acme-oip-abc"
    assert vault_name("", "oip-abc") == "p-oip-abc"
    assert vault_name("public", "oip-abc") != vault_name("", "oip-abc")  # a tenant called "public" is a tenant
    assert vault_name("abc-de", "f") != vault_name("abc", "de-f")
    for name in ("", "a_b", "a.b", "a/b", "ünï", "x" * 128):
        with pytest.raises(ValueError):
            vault_name("acme", name)
    with pytest.raises(ValueError):
        vault_name("acme", "x" * 122)  # fine alone, over 127 with the owner prefix
    with pytest.raises(ValueError):
        vault_name("../etc", "x")


# The local store


def test_the_local_store_keeps_one_private_file_per_secret(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "secrets")
    store.put("acme", "oip-1", "token-a")
    store.put("globex", "oip-1", "token-b")
    store.put("acme", "oip-1", "token-c")  # replaced whole
    assert store.get("acme", "oip-1") == "token-c" and store.get("globex", "oip-1") == "token-b"
    for path in (tmp_path / "secrets").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert LocalSecretStore(tmp_path / "secrets").get("acme", "oip-1") == "token-c"  # another process
    store.delete("acme", "oip-1")
    store.delete("acme", "oip-1")  # already gone: fine
    with pytest.raises(NotFound):
        store.get("acme", "oip-1")
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["t6-globex-oip-1"]


# Key Vault, through the SDK's own requests


def _authorized(request: Any) -> bool:
    return "authorization" in {k.lower() for k in request.headers}


def challenged(reply: Reply) -> Reply:
    """Key Vault's challenge comes first: a request without a token gets 401 with the authority to ask."""

    def answer(request: requests.PreparedRequest) -> Answer:
        return reply(request) if _authorized(request) else (401, {}, {"WWW-Authenticate": CHALLENGE})

    return answer


class FakeVault:
    """Secrets by name, with Key Vault's soft delete: a deleted name is recoverable and refuses a new value."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.deleted: dict[str, str] = {}

    def bundle(self, name: str, value: str) -> dict[str, Any]:
        return {"value": value, "id": f"{VAULT}/secrets/{name}/0123", "attributes": {"enabled": True}}

    def reply(self, request: requests.PreparedRequest) -> tuple[int, dict[str, Any]]:
        parts = [p for p in urlsplit(str(request.url)).path.split("/") if p]
        method = request.method
        if parts[0] == "secrets" and method == "PUT":
            if parts[1] in self.deleted:
                return 409, {"error": {"code": "Conflict", "message": "Secret is deleted but recoverable"}}
            self.secrets[parts[1]] = json.loads(request.body or b"{}")["value"]
            return 200, self.bundle(parts[1], self.secrets[parts[1]])
        if parts[0] == "secrets" and method == "GET":
            if parts[1] not in self.secrets:
                return 404, {"error": {"code": "SecretNotFound", "message": "not found"}}
            return 200, self.bundle(parts[1], self.secrets[parts[1]])
        if parts[0] == "secrets" and method == "DELETE":
            if parts[1] not in self.secrets:
                return 404, {"error": {"code": "SecretNotFound", "message": "not found"}}
            self.deleted[parts[1]] = self.secrets.pop(parts[1])
            return 200, {**self.bundle(parts[1], ""), "recoveryId": f"{VAULT}/deletedsecrets/{parts[1]}"}
        if parts[0] == "deletedsecrets" and method == "POST" and parts[-1] == "recover":
            self.secrets[parts[1]] = self.deleted.pop(parts[1])
            return 200, self.bundle(parts[1], self.secrets[parts[1]])
        if parts[0] == "deletedsecrets" and method == "GET":
            if parts[1] in self.deleted:
                return 200, {**self.bundle(parts[1], ""), "recoveryId": f"{VAULT}/deletedsecrets/{parts[1]}"}
            return 404, {"error": {"code": "SecretNotFound", "message": "not found"}}
        return 400, {"error": {"code": "BadRequest", "message": f"unexpected {method} {request.url}"}}


@pytest.fixture
def vault() -> FakeVault:
    return FakeVault()


def store_over(vault: FakeVault) -> tuple[KeyVaultSecretStore, RecordingTransport, FakeCredential]:
    transport = RecordingTransport(challenged(vault.reply), keep=_authorized)
    credential = FakeCredential()
    store = KeyVaultSecretStore(VAULT, credential, transport=transport, retry_total=0)
    return store, transport, credential


def calls(transport: RecordingTransport) -> list[tuple[str, str]]:
    return [(r.method, urlsplit(r.url).path.rstrip("/")) for r in transport.requests]


def test_put_and_get_are_the_sdks_requests_with_the_identitys_token(vault: FakeVault) -> None:
    store, transport, credential = store_over(vault)
    store.put("acme", "oip-1", "s3cr3t")
    assert store.get("acme", "oip-1") == "s3cr3t"

    assert calls(transport) == [("PUT", "/secrets/t4-acme-oip-1"), ("GET", "/secrets/t4-acme-oip-1")]
    put, get = transport.requests
    for request in (put, get):
        assert urlsplit(request.url).netloc == "kv-test.vault.azure.net"
        assert parse_qs(urlsplit(request.url).query)["api-version"] == [str(DEFAULT_VERSION.value)]
        assert request.headers["Authorization"] == "Bearer test-token"
    body = json.loads(put.body)
    assert body["value"] == "s3cr3t" and body["contentType"] == "text/plain"
    assert body["tags"] == {"owner": "acme", "use": "remote-model-credential"}
    assert credential.scopes and all(scope == ("https://vault.azure.net/.default",) for scope in credential.scopes)


def test_a_missing_secret_is_not_found_and_deleting_one_twice_succeeds(vault: FakeVault) -> None:
    store, transport, _ = store_over(vault)
    with pytest.raises(NotFound):
        store.get("acme", "oip-nope")
    store.put("", "oip-2", "platform-key")
    store.delete("", "oip-2")
    store.delete("", "oip-2")
    assert ("DELETE", "/secrets/p-oip-2") in calls(transport)
    assert vault.secrets == {} and set(vault.deleted) == {"p-oip-2"}


def test_writing_a_deleted_name_again_recovers_it_first(vault: FakeVault) -> None:
    store, transport, _ = store_over(vault)
    store.put("acme", "oip-3", "first")
    store.delete("acme", "oip-3")
    store.put("acme", "oip-3", "second")  # purge protection: the name is held by the deleted secret
    assert store.get("acme", "oip-3") == "second"
    seen = calls(transport)
    assert ("POST", "/deletedsecrets/t4-acme-oip-3/recover") in seen
    assert seen.index(("POST", "/deletedsecrets/t4-acme-oip-3/recover")) < len(seen) - 2
    with pytest.raises(ValueError):
        store.put("acme", "not_a_vault_name", "x")  # refused before any request
