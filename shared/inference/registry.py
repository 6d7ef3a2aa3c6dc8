"""The model registry over a store of packages (the `models` container): the ModelRegistry port, composed of
discovery (catalogue.py), lifecycle (lifecycle.py: publish, register, aliases) and loading (loading.py), as
MLServer keeps its model repository apart from its runtimes.

Layout of the `models` container:

    <name>/<version>/card.json                      a public model version: its card ...
    <name>/<version>/<artifact>, <file>...          ... its ONNX artifact and the card's extra `files`
    <name>/aliases.json                             {"aliases": {alias: version}, "history": [moves]}
    tenants/<tenant>/<name>/<version>/...           a tenant's private model: same layout under its prefix
    tenants/<tenant>/<name>/aliases.json

Credentials of remote runtimes are never in this container: they live in a SecretStore (Key Vault in Azure,
files under the data dir locally), named by packages.credential_name.

Names: each tenant has its own namespace for private models, so tenants never learn of each other's names; a
private name may not shadow a public one (registration refused) and the operator cannot publish a public model
under a name some tenant already uses privately. `tenants` and `secrets` are reserved.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.domain.models import DEFAULT_ALIAS, ModelCard, ModelRef
from shared.inference.catalogue import CATALOGUE_TTL_SECONDS, MISS_REFRESH_SECONDS, Catalogue
from shared.inference.containers import ContainerModels
from shared.inference.lifecycle import Publisher
from shared.inference.loading import DEFAULT_MEMORY_BUDGET_BYTES, ModelLoader
from shared.inference.packages import REMOTE_RUNTIME
from shared.inference.predictors import build_predictor
from shared.inference.sandbox import DEFAULT_LIMITS, SandboxLimits, SandboxPool
from shared.ports import BlobStore, Predictor, SecretStore

__all__ = [
    "CATALOGUE_TTL_SECONDS",
    "MISS_REFRESH_SECONDS",
    "REMOTE_RUNTIME",
    "BlobModelRegistry",
    "build_predictor",
]


class BlobModelRegistry:
    """The registry: discovery over the `models` container, lifecycle in a per-process LRU bounded by bytes."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        container: str = "models",
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        secrets: SecretStore | None = None,
        secret_lookup: Callable[[str], str | None] | None = None,
        onnx_threads: int = 0,
        check_endpoint: Callable[[str], Any] | None = None,
        sandbox_limits: SandboxLimits = DEFAULT_LIMITS,
        max_sandboxes: int = 4,
        containers: ContainerModels | None = None,
    ) -> None:
        """`secrets` keeps the credentials tenants send with remote models; `secret_lookup` resolves the
        environment/Key Vault secret names the operator's remote cards refer to; `onnx_threads` is ONNX Runtime's
        intra-op thread count per public model (0: its default, one per core); `check_endpoint` is the egress
        policy's URL check for tenants' remote endpoints; `sandbox_limits` bound the children that check and
        serve tenants' ONNX models; `containers` adds the models a container registry's labels describe."""
        self._catalogue = Catalogue(blobs, container, containers=containers)
        self.sandboxes = SandboxPool(sandbox_limits, max_children=max_sandboxes)
        self._loader = ModelLoader(
            blobs,
            container,
            memory_budget_bytes=memory_budget_bytes,
            secrets=secrets,
            secret_lookup=secret_lookup,
            onnx_threads=onnx_threads,
            sandboxes=self.sandboxes,
        )
        self._publisher = Publisher(
            blobs,
            container,
            self._catalogue,
            secrets=secrets,
            check_endpoint=check_endpoint,
            sandbox_limits=sandbox_limits,
        )

    # Discovery
    def refresh(self) -> None:
        self._catalogue.refresh()

    def resolve(self, tenant_id: str, ref: ModelRef) -> ModelCard:
        return self._catalogue.resolve(tenant_id, ref)

    def list_models(
        self, tenant_id: str, *, task: str | None = None, tags: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Models the tenant may use (public and its own), optionally of one task and carrying all the tags."""
        return self._catalogue.list_models(tenant_id, task=task, tags=tags)

    def get_model(self, tenant_id: str, name: str, *, with_card: bool = True) -> dict[str, Any]:
        return self._catalogue.get_model(tenant_id, name, with_card=with_card)

    def get_aliases(self, tenant_id: str, name: str) -> dict[str, Any]:
        """The model's aliases and every move of them (who, when), read fresh; raises UnknownModel."""
        return self._catalogue.get_aliases(tenant_id, name)

    # Loading
    def load(self, card: ModelCard, *, isolated: bool = False) -> Predictor:
        """The model ready to predict; `isolated` runs a tenant's ONNX model in a sandbox child (the API's way)."""
        return self._loader.load(card, isolated=isolated)

    def read_file(self, card: ModelCard, name: str) -> bytes:
        """One file the card lists, verified against its sha256; raises NotFound."""
        return self._loader.read_file(card, name)

    def loaded(self) -> dict[str, int]:
        """`name@version` -> estimated bytes of the models loaded in this process, least recently used first."""
        return self._loader.loaded()

    def close(self) -> None:
        """Stops the sandbox children."""
        self._loader.close()

    # Lifecycle
    def publish_package(
        self, package_dir: Path, *, set_alias: str | None = DEFAULT_ALIAS, by: str = "build", tenant: str | None = None
    ) -> bool:
        """Uploads a built package dir; True when it uploaded, False when the same version with the same bytes is
        there. `tenant` publishes it as that tenant's private model (checked, as the API does)."""
        return self._publisher.publish_package(package_dir, set_alias=set_alias, by=by, tenant=tenant)

    def register_private(
        self,
        tenant_id: str,
        card: dict[str, Any],
        artifact: bytes | None,
        *,
        files: dict[str, bytes] | None = None,
        credential: str | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        """A tenant's own model version: checked in a sandbox (or its endpoint by the egress policy); returns its
        model view."""
        self._publisher.register_private(tenant_id, card, artifact, files=files, credential=credential, by=by)
        return self.get_model(tenant_id, str(card["name"]))

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
        """Publishes one version (public, or private to `owner`); see Publisher.publish."""
        return self._publisher.publish(
            card_data, artifact, files, owner=owner, set_alias=set_alias, by=by, check=check, credential=credential
        )

    def move_alias(self, name: str, alias: str, version: str, *, by: str, owner: str | None = None) -> dict[str, Any]:
        """Points `alias` at an existing version and records who and when; returns the aliases with history."""
        return self._publisher.move_alias(name, alias, version, by=by, owner=owner)

    def update_aliases(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None], *, owner: str | None = None
    ) -> dict[str, Any]:
        """Read-modify-write of the model's aliases document If-Match its ETag (rollouts); see Publisher."""
        return self._publisher.update_aliases(name, change, owner=owner)
