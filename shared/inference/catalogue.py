"""Discovery: which model versions and aliases the `models` container holds, and which of them a tenant may see.

Freshness: the list of versions is cached for CATALOGUE_TTL_SECONDS, but resolving an alias checks aliases.json's
ETag (one HEAD) each time, so a promotion or rollback is seen by every process at its next job; a version or
alias not in the cached catalogue makes one early re-read (at most every MISS_REFRESH_SECONDS).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.domain.errors import NotFound, UnknownModel
from shared.domain.models import DEFAULT_ALIAS, SELECTOR_PATTERN, ModelCard, ModelRef
from shared.inference.packages import (
    PUBLIC,
    SECRETS_PREFIX,
    TENANTS_PREFIX,
    package_prefix,
    public_card,
    version_key,
)
from shared.ports import BlobStore

if TYPE_CHECKING:
    from shared.inference.containers import ContainerModels

logger = logging.getLogger(__name__)
CATALOGUE_TTL_SECONDS = 5.0
MISS_REFRESH_SECONDS = 0.5


@dataclass
class Entry:
    """One model (an owner's name): its versions' cards and its aliases document."""

    versions: dict[str, ModelCard] = field(default_factory=dict)
    aliases_path: str = ""
    aliases_etag: str | None = None


def empty_aliases() -> dict[str, Any]:
    return {"aliases": {}, "history": [], "rollouts": {}}


def aliases_view(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """What GET .../aliases answers: the aliases, their history, and each alias's rollout (canary, shadow)."""
    return {
        "name": name,
        "aliases": dict(doc.get("aliases") or {}),
        "history": list(doc.get("history") or []),
        "rollouts": dict(doc.get("rollouts") or {}),
    }


class Catalogue:
    """The cards and aliases in the `models` container, read through small ETag-checked caches."""

    def __init__(self, blobs: BlobStore, container: str, *, containers: ContainerModels | None = None) -> None:
        self._blobs = blobs
        self._container = container
        self._containers = containers  # models that come as labelled images (shared/inference/containers.py)
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], Entry] = {}
        self._read_at = float("-inf")
        self._card_cache: dict[str, tuple[str, ModelCard]] = {}
        self._alias_cache: dict[str, tuple[str, dict[str, Any]]] = {}

    def read(self, *, max_age: float = CATALOGUE_TTL_SECONDS) -> dict[tuple[str, str], Entry]:
        """(owner, name) -> its entry; owner PUBLIC ("") for the public catalogue."""
        with self._lock:
            if time.monotonic() - self._read_at < max_age:
                return self._entries
        entries: dict[tuple[str, str], Entry] = {}
        for blob in self._blobs.list_blobs(self._container):
            parts = blob.name.split("/")
            if parts[0] == SECRETS_PREFIX:
                continue
            owner = PUBLIC
            if parts[0] == TENANTS_PREFIX and len(parts) >= 4:
                owner, parts = parts[1], parts[2:]
            if len(parts) == 3 and parts[2] == "card.json":
                card = self.card(blob.name, blob.etag)
                if owner and card.owner != owner:
                    logger.warning("card %s names another owner; ignored", blob.name)
                    continue
                if card.name != parts[0] or card.version != parts[1]:
                    logger.warning("card %s names %s@%s; ignored", blob.name, card.name, card.version)
                    continue
                entries.setdefault((owner, parts[0]), Entry()).versions[card.version] = card
            elif len(parts) == 2 and parts[1] == "aliases.json":
                entry = entries.setdefault((owner, parts[0]), Entry())
                entry.aliases_path, entry.aliases_etag = blob.name, blob.etag
        if self._containers is not None:
            self._containers.merge_into(entries)
        with self._lock:
            self._entries, self._read_at = entries, time.monotonic()
        return entries

    def card(self, path: str, etag: str) -> ModelCard:
        cached = self._card_cache.get(path)
        if cached and cached[0] == etag:
            return cached[1]
        card = ModelCard(json.loads(self._blobs.read_bytes(self._container, path)))
        self._card_cache[path] = (etag, card)
        return card

    def alias_doc(self, path: str, etag: str | None) -> dict[str, Any]:
        """aliases.json at `path`; `etag` None means ask the store for the current one (a HEAD) first."""
        if etag is None:
            try:
                etag = self._blobs.get_info(self._container, path).etag
            except NotFound:
                return empty_aliases()
        with self._lock:
            cached = self._alias_cache.get(path)
        if cached and cached[0] == etag:
            return cached[1]
        try:
            data = json.loads(self._blobs.read_bytes(self._container, path))
        except NotFound:
            return empty_aliases()
        data.setdefault("aliases", {})
        data.setdefault("history", [])
        data.setdefault("rollouts", {})
        with self._lock:
            self._alias_cache[path] = (etag, data)
        return dict(data)

    def refresh(self) -> None:
        with self._lock:
            self._read_at = float("-inf")

    def lookup(self, tenant_id: str, name: str, *, max_age: float = CATALOGUE_TTL_SECONDS) -> tuple[str, Entry]:
        """The model `name` as this tenant sees it: its own private one, else the public one (never both)."""
        try:
            return _lookup_in(self.read(max_age=max_age), tenant_id, name)
        except UnknownModel:  # perhaps published by another process moments ago
            return _lookup_in(self.read(max_age=MISS_REFRESH_SECONDS), tenant_id, name)

    def aliases_of(self, owner: str, name: str, entry: Entry, *, fresh: bool) -> dict[str, Any]:
        path = entry.aliases_path or f"{package_prefix(owner, name)}/aliases.json"
        return self.alias_doc(path, None if fresh else entry.aliases_etag)

    def resolve(self, tenant_id: str, ref: ModelRef) -> ModelCard:
        owner, entry = self.lookup(tenant_id, ref.name)
        selector = ref.selector or DEFAULT_ALIAS
        if selector in entry.versions:
            return entry.versions[selector]
        version = str(self.aliases_of(owner, ref.name, entry, fresh=True)["aliases"].get(selector, selector))
        if version not in entry.versions and self._containers is not None and owner == PUBLIC:
            version = self._containers.alias(ref.name, selector) or version
        card = entry.versions.get(version) or self._read_version(tenant_id, owner, ref.name, version)
        if card is None:
            raise UnknownModel(f"model {ref.name!r} has no version or alias {selector!r}")
        return card

    def _read_version(self, tenant_id: str, owner: str, name: str, version: str) -> ModelCard | None:
        """A version published after the cached catalogue was read (by another process, moments ago)."""
        if not SELECTOR_PATTERN.fullmatch(version):
            return None
        path = f"{package_prefix(owner, name)}/{version}/card.json"
        try:
            info = self._blobs.get_info(self._container, path)
            card = self.card(path, info.etag)
        except NotFound:
            return None
        if card.name != name or card.version != version or (card.owner or PUBLIC) != owner:
            return None
        self.refresh()
        return card if card.visible_to(tenant_id) else None

    def list_models(
        self, tenant_id: str, *, task: str | None = None, tags: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Models the tenant may use (public and its own), optionally of one task and carrying all the tags."""
        names = sorted({name for owner, name in self.read() if owner in (PUBLIC, tenant_id)})
        models = []
        for name in names:
            try:
                model = self.get_model(tenant_id, name, with_card=False)
            except UnknownModel:
                continue
            if task and model["task"] != task:
                continue
            card_tags = model["card"].get("tags") or {}
            if tags and any(str(card_tags.get(k)) != v for k, v in tags.items()):
                continue
            models.append(model)
        return models

    def get_model(self, tenant_id: str, name: str, *, with_card: bool = True) -> dict[str, Any]:
        owner, entry = self.lookup(tenant_id, name)
        visible = entry.versions
        doc = self.aliases_of(owner, name, entry, fresh=with_card)
        aliases = {a: v for a, v in doc["aliases"].items() if v in visible}
        default = visible.get(aliases.get(DEFAULT_ALIAS, "")) or visible[max(visible, key=version_key)]
        view: dict[str, Any] = {
            "name": name,
            "task": default.task,
            "visibility": "private" if owner else "public",
            "versions": sorted(visible, key=version_key),
            "aliases": aliases,
            "defaultVersion": default.version,
            "inputTypes": list(default.input_types),
            "card": default.summary(),
        }
        if with_card:
            view["card"] = public_card(default)
        return view

    def get_aliases(self, tenant_id: str, name: str) -> dict[str, Any]:
        """The model's aliases, every move of them (who, when) and their rollouts, read fresh; raises
        UnknownModel. `owner` in the answer: the tenant whose private model it is, "" for a public one."""
        owner, entry = self.lookup(tenant_id, name)
        doc = self.aliases_of(owner, name, entry, fresh=True)
        return {**aliases_view(name, doc), "owner": owner}


def _lookup_in(entries: dict[tuple[str, str], Entry], tenant_id: str, name: str) -> tuple[str, Entry]:
    if tenant_id:
        private = entries.get((tenant_id, name))
        if private and private.versions:
            return tenant_id, private
    public = entries.get((PUBLIC, name))
    if public is not None:
        public = Entry(
            versions={v: c for v, c in public.versions.items() if c.visible_to(tenant_id)},
            aliases_path=public.aliases_path,
            aliases_etag=public.aliases_etag,
        )
        if public.versions:
            return PUBLIC, public
    raise UnknownModel(f"no model named {name!r} is available to you")
