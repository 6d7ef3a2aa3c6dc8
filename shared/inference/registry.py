"""The model registry over a store of packages (the `models` container): resolve, list, verify, load, publish."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from shared.domain.errors import NotFound, UnknownModel
from shared.domain.jobs import utcnow
from shared.domain.models import DEFAULT_ALIAS, ModelCard, ModelRef
from shared.inference.predictors import HANDLERS, new_session
from shared.ports import BlobStore, Predictor

logger = logging.getLogger(__name__)
CATALOGUE_TTL_SECONDS = 5.0


class BlobModelRegistry:
    """Discovery (cards and aliases in blob storage) kept apart from lifecycle (loaded models, LRU by count).

    Layout: `<name>/<version>/card.json`, `<name>/<version>/<artifact>`, `<name>/aliases.json`.
    """

    def __init__(self, blobs: BlobStore, *, container: str = "models", max_loaded: int = 8) -> None:
        self._blobs = blobs
        self._container = container
        self._max_loaded = max_loaded
        self._lock = threading.Lock()
        self._catalogue: dict[str, dict[str, Any]] = {}
        self._catalogue_at = 0.0
        self._card_cache: dict[str, tuple[str, ModelCard]] = {}
        self._loaded: OrderedDict[tuple[str, str], Predictor] = OrderedDict()

    # Discovery
    def _read_catalogue(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._catalogue_at < CATALOGUE_TTL_SECONDS:
                return self._catalogue
        catalogue: dict[str, dict[str, Any]] = {}
        for blob in self._blobs.list_blobs(self._container):
            parts = blob.name.split("/")
            if len(parts) == 3 and parts[2] == "card.json":
                card = self._card(blob.name, blob.etag)
                catalogue.setdefault(card.name, {"versions": {}, "aliases": {}})["versions"][card.version] = card
            elif len(parts) == 2 and parts[1] == "aliases.json":
                data = json.loads(self._blobs.read_bytes(self._container, blob.name))
                catalogue.setdefault(parts[0], {"versions": {}, "aliases": {}})["aliases"] = data.get("aliases", {})
        with self._lock:
            self._catalogue, self._catalogue_at = catalogue, time.monotonic()
        return catalogue

    def _card(self, path: str, etag: str) -> ModelCard:
        cached = self._card_cache.get(path)
        if cached and cached[0] == etag:
            return cached[1]
        card = ModelCard(json.loads(self._blobs.read_bytes(self._container, path)))
        self._card_cache[path] = (etag, card)
        return card

    def refresh(self) -> None:
        with self._lock:
            self._catalogue_at = 0.0

    def resolve(self, tenant_id: str, ref: ModelRef) -> ModelCard:
        entry = self._read_catalogue().get(ref.name)
        versions: dict[str, ModelCard] = entry["versions"] if entry else {}
        visible = {v: card for v, card in versions.items() if card.visible_to(tenant_id)}
        if not visible:
            raise UnknownModel(f"no model named {ref.name!r} is available to you")
        selector = ref.selector or DEFAULT_ALIAS
        if selector in visible:
            return visible[selector]
        version = (entry or {}).get("aliases", {}).get(selector)
        if version in visible:
            return visible[version]
        raise UnknownModel(f"model {ref.name!r} has no version or alias {selector!r}")

    def list_models(
        self, tenant_id: str, *, task: str | None = None, tags: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        models = []
        for name in sorted(self._read_catalogue()):
            try:
                model = self.get_model(tenant_id, name, with_card=False)
            except UnknownModel:
                continue
            if task and model["task"] != task:
                continue
            if tags and any(model["card"]["tags"].get(k) != v for k, v in tags.items()):
                continue
            models.append(model)
        return models

    def get_model(self, tenant_id: str, name: str, *, with_card: bool = True) -> dict[str, Any]:
        entry = self._read_catalogue().get(name) or {"versions": {}, "aliases": {}}
        visible = {v: c for v, c in entry["versions"].items() if c.visible_to(tenant_id)}
        if not visible:
            raise UnknownModel(f"no model named {name!r} is available to you")
        aliases = {a: v for a, v in entry["aliases"].items() if v in visible}
        default = visible.get(aliases.get(DEFAULT_ALIAS, "")) or visible[max(visible, key=_version_key)]
        view = {
            "name": name,
            "task": default.task,
            "versions": sorted(visible, key=_version_key),
            "aliases": aliases,
            "defaultVersion": default.version,
            "inputTypes": list(default.input_types),
            "card": default.summary(),
        }
        if with_card:
            view["card"] = {k: v for k, v in default.raw.items() if k not in {"buildKey", "buildEnvironment"}}
        return view

    # Lifecycle
    def load(self, card: ModelCard) -> Predictor:
        key = (card.name, card.version)
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None:
                self._loaded.move_to_end(key)
                return cached
        started = time.perf_counter()
        artifact = self._blobs.read_bytes(self._container, f"{card.name}/{card.version}/{card.artifact_file}")
        digest = hashlib.sha256(artifact).hexdigest()
        if digest != card.artifact_sha256:
            raise RuntimeError(
                f"model {card.name}@{card.version}: artifact sha256 {digest} does not match its card; refusing it"
            )
        handler = HANDLERS.get(card.handler)
        if handler is None:
            raise RuntimeError(f"model {card.name}@{card.version}: no handler {card.handler!r}")
        predictor: Predictor = handler(card, new_session(artifact))
        logger.info("loaded %s@%s in %.0f ms", card.name, card.version, (time.perf_counter() - started) * 1000)
        with self._lock:
            self._loaded[key] = predictor
            while len(self._loaded) > self._max_loaded:
                self._loaded.popitem(last=False)
        return predictor

    # Operator side
    def publish_package(self, package_dir: Path, *, set_alias: str | None = DEFAULT_ALIAS, by: str = "build") -> bool:
        """Uploads a built package unless the same artifact is already there; True when it uploaded."""
        card = ModelCard(json.loads((package_dir / "card.json").read_text()))
        prefix = f"{card.name}/{card.version}"
        try:
            existing = ModelCard(json.loads(self._blobs.read_bytes(self._container, f"{prefix}/card.json")))
            if existing.artifact_sha256 == card.artifact_sha256:
                return False
            raise RuntimeError(f"{prefix} exists with another artifact; versions are immutable, build a new one")
        except NotFound:
            pass
        artifact = (package_dir / card.artifact_file).read_bytes()
        if hashlib.sha256(artifact).hexdigest() != card.artifact_sha256:
            raise RuntimeError(f"{package_dir}: the artifact does not match its card's sha256")
        self._blobs.write_bytes(self._container, f"{prefix}/{card.artifact_file}", artifact)
        self._blobs.write_bytes(
            self._container,
            f"{prefix}/card.json",
            json.dumps(card.raw, indent=2).encode(),
            content_type="application/json",
        )
        if set_alias and self._aliases(card.name).get(set_alias) is None:
            self.move_alias(card.name, set_alias, card.version, by=by)
        self.refresh()
        return True

    def _aliases(self, name: str) -> dict[str, str]:
        try:
            data = json.loads(self._blobs.read_bytes(self._container, f"{name}/aliases.json"))
        except NotFound:
            return {}
        return dict(data.get("aliases", {}))

    def move_alias(self, name: str, alias: str, version: str, *, by: str) -> None:
        path = f"{name}/aliases.json"
        try:
            data = json.loads(self._blobs.read_bytes(self._container, path))
        except NotFound:
            data = {"aliases": {}, "history": []}
        data["history"].append(
            {"alias": alias, "from": data["aliases"].get(alias), "to": version, "by": by, "at": utcnow()}
        )
        data["aliases"][alias] = version
        self._blobs.write_bytes(
            self._container, path, json.dumps(data, indent=2).encode(), content_type="application/json"
        )
        self.refresh()


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (float("inf"), version)
