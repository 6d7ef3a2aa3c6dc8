"""SecretStores: Key Vault in Azure (identity only), files outside every storage account for the local stack."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from shared.domain.errors import NotFound
from shared.domain.tenants import TENANT_ID_PATTERN

logger = logging.getLogger(__name__)

# Key Vault secret names: 1-127 characters, alphanumerics and hyphens ("Naming rules and restrictions for Azure
# resources", Microsoft.KeyVault vaults/secrets). The local store keeps to the same rule so nothing passes here
# that Key Vault would refuse.
VAULT_NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")


def vault_name(tenant_id: str, name: str) -> str:
    """The one store-wide name of a tenant's secret (`t<length of the id>-<tenant>-<name>`) or the platform's
    (`p-<name>`): the prefixes differ in their first letter, so no tenant id (not even "public") reaches the
    platform's names, and the length says where the id ends, so two (tenant, name) pairs never share one."""
    if tenant_id and not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise ValueError(f"{tenant_id!r} is not a tenant id")
    full = f"t{len(tenant_id)}-{tenant_id}-{name}" if tenant_id else f"p-{name}"
    if not VAULT_NAME_PATTERN.fullmatch(name) or not VAULT_NAME_PATTERN.fullmatch(full):
        raise ValueError(f"secret name {name!r} is not 1-127 letters, digits and dashes")
    return full


class LocalSecretStore:
    """One file per secret under a directory of the local data dir (0700, files 0600).

    No SAS of Azurite's can name these files, and the worker processes (same user, same data dir) read them.
    Not encrypted: a key kept next to the files would protect nothing from whoever can read the directory.
    """

    def __init__(self, directory: Path) -> None:
        self._dir = Path(directory)

    def _path(self, tenant_id: str, name: str) -> Path:
        return self._dir / vault_name(tenant_id, name)

    def put(self, tenant_id: str, name: str, value: str) -> None:
        path = self._path(tenant_id, name)
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(value)
        os.replace(temporary, path)  # readers never see half a secret

    def get(self, tenant_id: str, name: str) -> str:
        try:
            return self._path(tenant_id, name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"no secret {name!r}") from None

    def delete(self, tenant_id: str, name: str) -> None:
        self._path(tenant_id, name).unlink(missing_ok=True)


class KeyVaultSecretStore:
    """Secrets in one Key Vault through the app's managed identity (no key, no connection string).

    The identity needs `Key Vault Secrets Officer` on the vault: it writes a secret when a tenant registers a
    remote model (`Key Vault Secrets User` only reads). The vault has purge protection, so a deleted secret stays
    recoverable for its retention period; writing the same name again recovers it first.
    """

    def __init__(self, vault_url: str, credential: Any, **client_options: Any) -> None:
        from azure.keyvault.secrets import SecretClient

        self._client = SecretClient(vault_url, credential, **client_options)

    def put(self, tenant_id: str, name: str, value: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        full = vault_name(tenant_id, name)
        try:
            self._client.set_secret(full, value, content_type="text/plain", tags=_tags(tenant_id))
        except ResourceExistsError:  # 409: deleted but recoverable under purge protection
            self._client.begin_recover_deleted_secret(full).wait()
            self._client.set_secret(full, value, content_type="text/plain", tags=_tags(tenant_id))

    def get(self, tenant_id: str, name: str) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            value = self._client.get_secret(vault_name(tenant_id, name)).value
        except ResourceNotFoundError:
            raise NotFound(f"no secret {name!r}") from None
        if value is None:
            raise NotFound(f"secret {name!r} has no value")
        return str(value)

    def delete(self, tenant_id: str, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):  # already gone: deleting succeeds
            self._client.begin_delete_secret(vault_name(tenant_id, name))


def _tags(tenant_id: str) -> dict[str, str]:
    return {"owner": tenant_id or "platform", "use": "remote-model-credential"}
