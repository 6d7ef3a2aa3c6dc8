"""Lifecycle: publishing model versions (the operator's public ones, tenants' private ones) and moving aliases.

A version is immutable: its card is written last, after the artifact and files, so a card always names bytes
that are there, and publishing an existing version with other bytes is refused. Aliases move; every move is
appended to the history in aliases.json with who and when, and an alias's rollout (canary, shadow; decided by
services.rollouts) is kept beside it under `rollouts`; aliases.json is only rewritten If-Match its ETag. A tenant's
ONNX package is checked in a sandbox child (sandbox.check_in_sandbox) before anything is written; a remote model's
credential goes to the SecretStore, never into the `models` container.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.domain.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed, UnknownModel
from shared.domain.jobs import utcnow
from shared.domain.models import DEFAULT_ALIAS, SELECTOR_PATTERN, ModelCard
from shared.inference.catalogue import Catalogue, aliases_view, empty_aliases
from shared.inference.packages import (
    PUBLIC,
    REMOTE_RUNTIME,
    RESERVED_NAMES,
    bad,
    check_remote_card,
    credential_name,
    normalised_card,
    package_digest,
    package_prefix,
    read_package_file,
)
from shared.inference.sandbox import DEFAULT_LIMITS, SandboxLimits, check_in_sandbox
from shared.ports import BlobStore, SecretStore

logger = logging.getLogger(__name__)
MAX_ALIAS_CONFLICTS = 50


def _default_endpoint_check(url: str) -> Any:
    from shared.adapters.egress import default_policy

    return default_policy().check_url(url)


class Publisher:
    """Writes packages and aliases into the `models` container, and credentials into the SecretStore."""

    def __init__(
        self,
        blobs: BlobStore,
        container: str,
        catalogue: Catalogue,
        *,
        secrets: SecretStore | None = None,
        check_endpoint: Callable[[str], Any] | None = None,
        sandbox_limits: SandboxLimits = DEFAULT_LIMITS,
    ) -> None:
        self._blobs = blobs
        self._container = container
        self._catalogue = catalogue
        self._secrets = secrets
        self._check_endpoint = check_endpoint or _default_endpoint_check
        self._limits = sandbox_limits

    def publish_package(
        self, package_dir: Path, *, set_alias: str | None = DEFAULT_ALIAS, by: str = "build", tenant: str | None = None
    ) -> bool:
        """Uploads a built package dir (card.json + artifact + files); True when it uploaded, False when the same
        version with the same bytes is there. `tenant` publishes it as that tenant's private model (checked by
        loading it, as the API does)."""
        card = json.loads((package_dir / "card.json").read_text())
        if not isinstance(card, dict):
            raise bad(f"{package_dir}/card.json is not a JSON object")
        artifact = None
        if card.get("runtime") != REMOTE_RUNTIME:
            artifact_name = str((card.get("artifact") or {}).get("file", "model.onnx"))
            artifact = read_package_file(package_dir, artifact_name)
        files = {
            str(item.get("file")): read_package_file(package_dir, str(item.get("file")))
            for item in card.get("files") or []
        }
        owner = tenant or (str(card["owner"]) if card.get("owner") else None)
        return self.publish(card, artifact, files, owner=owner, set_alias=set_alias, by=by, check=owner is not None)

    def register_private(
        self,
        tenant_id: str,
        card: dict[str, Any],
        artifact: bytes | None,
        *,
        files: dict[str, bytes] | None = None,
        credential: str | None = None,
        by: str | None = None,
    ) -> None:
        """A tenant's own model version, checked (in a sandbox, or its endpoint against the egress policy)."""
        self.publish(
            card,
            artifact,
            files or {},
            owner=tenant_id,
            set_alias=DEFAULT_ALIAS,
            by=by or f"tenant:{tenant_id}",
            check=True,
            credential=credential,
        )

    def publish(
        self,
        card_data: dict[str, Any],
        artifact: bytes | None,
        files: dict[str, bytes],
        *,
        owner: str | None = None,
        set_alias: str | None = DEFAULT_ALIAS,
        by: str = "build",
        check: bool = False,
        credential: str | None = None,
    ) -> bool:
        """Publishes one version (public, or private to `owner`); see publish_package for the answer.

        Raises InvalidInput (code InvalidModelPackage) for a package that is wrong, AlreadyExists when the version
        exists with other bytes (VersionExists) or the name is taken in the other namespace (ModelNameTaken).
        """
        raw = normalised_card(card_data, artifact, files, owner)
        card = ModelCard(raw)
        if card.raw.get("runtime") == REMOTE_RUNTIME:
            check_remote_card(card, credential)
            if card.owner:  # a tenant's endpoint: the one egress policy decides (one generic message)
                self._check_endpoint(str(card.raw["endpoint"]))
        self._check_name_free(card.owner, card.name)
        prefix = f"{package_prefix(card.owner, card.name)}/{card.version}"
        try:
            existing = ModelCard(json.loads(self._blobs.read_bytes(self._container, f"{prefix}/card.json")))
        except NotFound:
            existing = None
        if existing is not None:
            if package_digest(existing.raw) == package_digest(raw):
                return False
            raise AlreadyExists(
                f"{card.name}@{card.version} exists with another package; versions are immutable, publish a new one",
                code="VersionExists",
            )
        if check and artifact is not None:
            check_in_sandbox(card, artifact, files, self._limits)
        if credential:
            if self._secrets is None:  # the operator's set-up (AIAAS_KEYVAULT_URL): said plainly, not a 500
                raise InvalidInput(
                    "this platform keeps no endpoint credentials (no secret store is configured)",
                    code="CredentialStoreMissing",
                )
            self._secrets.put(card.owner or PUBLIC, credential_name(card), credential)
        try:
            self._write(prefix, raw, artifact, files)
        except BaseException:
            if credential and self._secrets is not None:
                self._secrets.delete(card.owner or PUBLIC, credential_name(card))
            raise
        logger.info("published %s@%s%s", card.name, card.version, f" for tenant {owner}" if owner else "")
        self._catalogue.refresh()
        path = f"{package_prefix(card.owner, card.name)}/aliases.json"
        if set_alias and self._catalogue.alias_doc(path, None)["aliases"].get(set_alias) is None:
            self.move_alias(card.name, set_alias, card.version, by=by, owner=card.owner)
        return True

    def _write(self, prefix: str, raw: dict[str, Any], artifact: bytes | None, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self._blobs.write_bytes(self._container, f"{prefix}/{name}", data)
        if artifact is not None:
            self._blobs.write_bytes(self._container, f"{prefix}/{ModelCard(raw).artifact_file}", artifact)
        self._blobs.write_bytes(
            self._container, f"{prefix}/card.json", json.dumps(raw, indent=2).encode(), content_type="application/json"
        )

    def _check_name_free(self, owner: str | None, name: str) -> None:
        if name in RESERVED_NAMES:
            raise bad(f"model name {name!r} is reserved")
        catalogue = self._catalogue.read(max_age=0.0)
        if owner and (PUBLIC, name) in catalogue:
            raise AlreadyExists(f"{name!r} is the name of a public model; choose another", code="ModelNameTaken")
        if not owner and any(o and n == name for o, n in catalogue):
            raise AlreadyExists(f"{name!r} is already a tenant's private model name", code="ModelNameTaken")

    def move_alias(self, name: str, alias: str, version: str, *, by: str, owner: str | None = None) -> dict[str, Any]:
        """Points `alias` of the model (public, or `owner`'s private one) at an existing version and records who
        and when; returns the aliases with their history. Rolling back is moving it to the previous version."""
        if not SELECTOR_PATTERN.fullmatch(alias) or not SELECTOR_PATTERN.fullmatch(version):
            raise InvalidInput(f"alias {alias!r} or version {version!r} is not valid", code="InvalidAlias")
        prefix = package_prefix(owner, name)
        if not self._blob_exists(f"{prefix}/{version}/card.json"):
            raise UnknownModel(f"model {name!r} has no version {version!r}")
        if self._blob_exists(f"{prefix}/{alias}/card.json"):
            raise InvalidInput(
                f"{alias!r} is a version of {name!r}; an alias cannot share its name", code="InvalidAlias"
            )

        def move(data: dict[str, Any]) -> dict[str, Any]:
            entry = {"alias": alias, "from": data["aliases"].get(alias), "to": version, "by": by, "at": utcnow()}
            if data["rollouts"].pop(alias, None) is not None:  # a hand move ends the alias's rollout: its base moved
                entry["rollout"] = "cancelled"
            data["history"].append(entry)
            data["aliases"][alias] = version
            return data

        view = self.update_aliases(name, move, owner=owner)
        logger.info("alias %s of %s now %s (by %s)", alias, name, version, by)
        return view

    def update_aliases(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None], *, owner: str | None = None
    ) -> dict[str, Any]:
        """Read-modify-write of the model's aliases.json, If-Match on its ETag, retried on a conflict: two
        workers deciding a rollout at once (or a worker and an operator) never lose each other's change.

        `change` gets the document ({"aliases", "history", "rollouts"}) and returns it changed, or None to
        write nothing; it may run more than once (once per conflict). Returns the aliases view."""
        path = f"{package_prefix(owner, name)}/aliases.json"
        for _ in range(MAX_ALIAS_CONFLICTS):
            try:
                etag: str | None = self._blobs.get_info(self._container, path).etag
                data = json.loads(self._blobs.read_bytes(self._container, path))
            except NotFound:
                etag, data = None, empty_aliases()
            for key, empty in (("aliases", {}), ("history", []), ("rollouts", {})):
                data.setdefault(key, empty)
            changed = change(data)
            if changed is None:
                return aliases_view(name, data)
            body = json.dumps(changed, indent=2).encode()
            try:
                if etag is None:  # the first alias of a model: a race here is two publishes of its first version
                    self._blobs.write_bytes(self._container, path, body, content_type="application/json")
                else:
                    self._blobs.replace_bytes(self._container, path, body, etag=etag, content_type="application/json")
            except PreconditionFailed:
                continue
            self._catalogue.refresh()
            return aliases_view(name, changed)
        raise PreconditionFailed(f"the aliases of {name!r} kept changing; try again")

    def _blob_exists(self, path: str) -> bool:
        try:
            self._blobs.get_info(self._container, path)
        except NotFound:
            return False
        return True
