"""The model registry over a store of packages (the `models` container): resolve, list, verify, load, publish.

Discovery (cards and aliases in blob storage) is kept apart from lifecycle (models loaded in this process, least
recently used out within a byte budget), as in MLServer's repository/model split.

Layout of the `models` container:

    <name>/<version>/card.json                      a public model version: its card ...
    <name>/<version>/<artifact>, <file>...          ... its ONNX artifact and the card's extra `files`
    <name>/aliases.json                             {"aliases": {alias: version}, "history": [moves]}
    tenants/<tenant>/<name>/<version>/...           a tenant's private model: same layout under its prefix
    tenants/<tenant>/<name>/aliases.json
    secrets/<owner or "public">/<name>/<version>.json   credentials of remote runtimes; never served by a route

Names: each tenant has its own namespace for private models, so tenants never learn of each other's names; a
private name may not shadow a public one (registration refused) and the operator cannot publish a public model
under a name some tenant already uses privately. `tenants` and `secrets` are reserved.

A version is immutable: its card is written last, after the artifact and files, so a card always names bytes
that are there, and publishing an existing version with other bytes is refused. Aliases move; every move is
appended to the history in aliases.json with who and when.

Freshness: the list of versions is cached for CATALOGUE_TTL_SECONDS, but resolving an alias checks aliases.json's
ETag (one HEAD) each time, so a promotion or rollback is seen by every process at its next job; a version or
alias not in the cached catalogue makes one early re-read (at most every MISS_REFRESH_SECONDS).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.domain.errors import AlreadyExists, InvalidInput, NotFound, UnknownModel
from shared.domain.jobs import utcnow
from shared.domain.models import (
    DEFAULT_ALIAS,
    MIN_SHARD_BYTES,
    MODEL_NAME_PATTERN,
    SELECTOR_PATTERN,
    ModelCard,
    ModelRef,
)
from shared.domain.tenants import TENANT_ID_PATTERN
from shared.inference.predictors import HANDLERS, new_session
from shared.ports import BlobStore, Predictor

logger = logging.getLogger(__name__)
CATALOGUE_TTL_SECONDS = 5.0
MISS_REFRESH_SECONDS = 0.5
DEFAULT_MEMORY_BUDGET_BYTES = 1024**3
REMOTE_RUNTIME = "remote-oip"
REMOTE_FOOTPRINT_BYTES = 64 * 1024
TENANTS_PREFIX = "tenants"
SECRETS_PREFIX = "secrets"
RESERVED_NAMES = frozenset({TENANTS_PREFIX, SECRETS_PREFIX})
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
AUTH_TYPES = frozenset({"none", "bearer", "header"})
INVALID_PACKAGE = "InvalidModelPackage"
PUBLIC = ""  # the owner key of the platform's public catalogue


@dataclass
class _Entry:
    """One model (an owner's name): its versions' cards and its aliases document."""

    versions: dict[str, ModelCard] = field(default_factory=dict)
    aliases_path: str = ""
    aliases_etag: str | None = None


@dataclass
class _Loaded:
    predictor: Predictor
    size: int


def _package_prefix(owner: str | None, name: str) -> str:
    return f"{TENANTS_PREFIX}/{owner}/{name}" if owner else name


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID_PACKAGE)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobModelRegistry:
    """The registry: discovery over the `models` container, lifecycle in a per-process LRU bounded by bytes."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        container: str = "models",
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        secret_lookup: Callable[[str], str | None] | None = None,
        onnx_threads: int = 0,
    ) -> None:
        """`secret_lookup` resolves the environment/Key Vault secret names the operator's remote cards refer to;
        `onnx_threads` is ONNX Runtime's intra-op thread count per model (0: its default, one per core)."""
        self._blobs = blobs
        self._onnx_threads = onnx_threads
        self._container = container
        self._memory_budget = memory_budget_bytes
        self._secret_lookup = secret_lookup or _environment_secret
        self._lock = threading.Lock()
        self._catalogue: dict[tuple[str, str], _Entry] = {}
        self._catalogue_at = float("-inf")
        self._card_cache: dict[str, tuple[str, ModelCard]] = {}
        self._alias_cache: dict[str, tuple[str, dict[str, Any]]] = {}
        self._loaded: OrderedDict[tuple[str, str, str], _Loaded] = OrderedDict()
        self._loaded_bytes = 0

    # Discovery
    def _read_catalogue(self, *, max_age: float = CATALOGUE_TTL_SECONDS) -> dict[tuple[str, str], _Entry]:
        with self._lock:
            if time.monotonic() - self._catalogue_at < max_age:
                return self._catalogue
        catalogue: dict[tuple[str, str], _Entry] = {}
        for blob in self._blobs.list_blobs(self._container):
            parts = blob.name.split("/")
            if parts[0] == SECRETS_PREFIX:
                continue
            owner = PUBLIC
            if parts[0] == TENANTS_PREFIX and len(parts) >= 4:
                owner, parts = parts[1], parts[2:]
            if len(parts) == 3 and parts[2] == "card.json":
                card = self._card(blob.name, blob.etag)
                if owner and card.owner != owner:
                    logger.warning("card %s names another owner; ignored", blob.name)
                    continue
                if card.name != parts[0] or card.version != parts[1]:
                    logger.warning("card %s names %s@%s; ignored", blob.name, card.name, card.version)
                    continue
                catalogue.setdefault((owner, parts[0]), _Entry()).versions[card.version] = card
            elif len(parts) == 2 and parts[1] == "aliases.json":
                entry = catalogue.setdefault((owner, parts[0]), _Entry())
                entry.aliases_path, entry.aliases_etag = blob.name, blob.etag
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

    def _alias_doc(self, path: str, etag: str | None) -> dict[str, Any]:
        """aliases.json at `path`; `etag` None means ask the store for the current one (a HEAD) first."""
        if etag is None:
            try:
                etag = self._blobs.get_info(self._container, path).etag
            except NotFound:
                return {"aliases": {}, "history": []}
        with self._lock:
            cached = self._alias_cache.get(path)
        if cached and cached[0] == etag:
            return cached[1]
        try:
            data = json.loads(self._blobs.read_bytes(self._container, path))
        except NotFound:
            return {"aliases": {}, "history": []}
        data.setdefault("aliases", {})
        data.setdefault("history", [])
        with self._lock:
            self._alias_cache[path] = (etag, data)
        return dict(data)

    def refresh(self) -> None:
        with self._lock:
            self._catalogue_at = float("-inf")

    def _lookup(self, tenant_id: str, name: str, *, max_age: float = CATALOGUE_TTL_SECONDS) -> tuple[str, _Entry]:
        """The model `name` as this tenant sees it: its own private one, else the public one (never both)."""
        try:
            return self._lookup_in(self._read_catalogue(max_age=max_age), tenant_id, name)
        except UnknownModel:  # perhaps published by another process moments ago
            return self._lookup_in(self._read_catalogue(max_age=MISS_REFRESH_SECONDS), tenant_id, name)

    @staticmethod
    def _lookup_in(catalogue: dict[tuple[str, str], _Entry], tenant_id: str, name: str) -> tuple[str, _Entry]:
        if tenant_id:
            private = catalogue.get((tenant_id, name))
            if private and private.versions:
                return tenant_id, private
        public = catalogue.get((PUBLIC, name))
        if public is not None:
            public = _Entry(
                versions={v: c for v, c in public.versions.items() if c.visible_to(tenant_id)},
                aliases_path=public.aliases_path,
                aliases_etag=public.aliases_etag,
            )
            if public.versions:
                return PUBLIC, public
        raise UnknownModel(f"no model named {name!r} is available to you")

    def _aliases_of(self, owner: str, name: str, entry: _Entry, *, fresh: bool) -> dict[str, Any]:
        path = entry.aliases_path or f"{_package_prefix(owner, name)}/aliases.json"
        return self._alias_doc(path, None if fresh else entry.aliases_etag)

    def resolve(self, tenant_id: str, ref: ModelRef) -> ModelCard:
        owner, entry = self._lookup(tenant_id, ref.name)
        selector = ref.selector or DEFAULT_ALIAS
        if selector in entry.versions:
            return entry.versions[selector]
        version = str(self._aliases_of(owner, ref.name, entry, fresh=True)["aliases"].get(selector, selector))
        card = entry.versions.get(version) or self._read_version(tenant_id, owner, ref.name, version)
        if card is None:
            raise UnknownModel(f"model {ref.name!r} has no version or alias {selector!r}")
        return card

    def _read_version(self, tenant_id: str, owner: str, name: str, version: str) -> ModelCard | None:
        """A version published after the cached catalogue was read (by another process, moments ago)."""
        if not SELECTOR_PATTERN.fullmatch(version):
            return None
        path = f"{_package_prefix(owner, name)}/{version}/card.json"
        try:
            info = self._blobs.get_info(self._container, path)
            card = self._card(path, info.etag)
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
        names = sorted({name for owner, name in self._read_catalogue() if owner in (PUBLIC, tenant_id)})
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
        owner, entry = self._lookup(tenant_id, name)
        visible = entry.versions
        doc = self._aliases_of(owner, name, entry, fresh=with_card)
        aliases = {a: v for a, v in doc["aliases"].items() if v in visible}
        default = visible.get(aliases.get(DEFAULT_ALIAS, "")) or visible[max(visible, key=_version_key)]
        view: dict[str, Any] = {
            "name": name,
            "task": default.task,
            "visibility": "private" if owner else "public",
            "versions": sorted(visible, key=_version_key),
            "aliases": aliases,
            "defaultVersion": default.version,
            "inputTypes": list(default.input_types),
            "card": default.summary(),
        }
        if with_card:
            view["card"] = _public_card(default)
        return view

    def get_aliases(self, tenant_id: str, name: str) -> dict[str, Any]:
        """The model's aliases and every move of them (who, when), read fresh; raises UnknownModel."""
        owner, entry = self._lookup(tenant_id, name)
        doc = self._aliases_of(owner, name, entry, fresh=True)
        return {"name": name, "aliases": dict(doc["aliases"]), "history": list(doc["history"])}

    # Lifecycle
    def load(self, card: ModelCard) -> Predictor:
        key = (card.owner or PUBLIC, card.name, card.version)
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None:
                self._loaded.move_to_end(key)
                return cached.predictor
        started = time.perf_counter()
        if card.raw.get("runtime") == REMOTE_RUNTIME:
            predictor, size = self._load_remote(card), REMOTE_FOOTPRINT_BYTES
        else:
            artifact, files = self._read_package(card)
            predictor = build_predictor(card, artifact, files, threads=self._onnx_threads)
            size = len(artifact) + sum(len(data) for data in files.values())
        logger.info("loaded %s@%s in %.0f ms", card.name, card.version, (time.perf_counter() - started) * 1000)
        self._remember(key, predictor, size)
        return predictor

    def _remember(self, key: tuple[str, str, str], predictor: Predictor, size: int) -> None:
        """Keeps the model, evicting least recently used ones while over budget (the newest always stays)."""
        with self._lock:
            previous = self._loaded.pop(key, None)
            if previous is not None:
                self._loaded_bytes -= previous.size
            self._loaded[key] = _Loaded(predictor, size)
            self._loaded_bytes += size
            while self._loaded_bytes > self._memory_budget and len(self._loaded) > 1:
                evicted_key, evicted = self._loaded.popitem(last=False)
                self._loaded_bytes -= evicted.size
                logger.info("unloaded %s@%s (memory budget)", evicted_key[1], evicted_key[2])

    def loaded(self) -> dict[str, int]:
        """`name@version` -> estimated bytes of the models loaded in this process, least recently used first."""
        with self._lock:
            return {f"{name}@{version}": item.size for (_, name, version), item in self._loaded.items()}

    def _read_package(self, card: ModelCard) -> tuple[bytes, dict[str, bytes]]:
        prefix = f"{_package_prefix(card.owner, card.name)}/{card.version}"
        artifact = self._blobs.read_bytes(self._container, f"{prefix}/{card.artifact_file}")
        digest = _sha256(artifact)
        if digest != card.artifact_sha256:
            raise RuntimeError(
                f"model {card.name}@{card.version}: artifact sha256 {digest} does not match its card; refusing it"
            )
        files: dict[str, bytes] = {}
        for item in _card_files(card.raw):
            data = self._blobs.read_bytes(self._container, f"{prefix}/{item['file']}")
            if _sha256(data) != item["sha256"]:
                raise RuntimeError(
                    f"model {card.name}@{card.version}: file {item['file']} does not match its card's sha256"
                )
            files[str(item["file"])] = data
        return artifact, files

    def _load_remote(self, card: ModelCard) -> Predictor:
        from shared.inference.remote import RemoteOipPredictor

        return RemoteOipPredictor(card, headers=self._auth_headers(card))

    def _auth_headers(self, card: ModelCard) -> dict[str, str]:
        auth = dict(card.raw.get("auth") or {"type": "none"})
        kind = auth.get("type", "none")
        if kind == "none":
            return {}
        secret: str | None
        if auth.get("secretName"):
            if card.owner:  # a tenant naming a platform secret could send it to its own endpoint
                raise RuntimeError(f"model {card.name}@{card.version}: private models cannot name platform secrets")
            secret = self._secret_lookup(str(auth["secretName"]))
        else:
            try:
                stored = json.loads(self._blobs.read_bytes(self._container, _secret_path(card.owner, card)))
            except NotFound:
                stored = {}
            secret = stored.get("credential")
        if not secret:
            raise RuntimeError(f"model {card.name}@{card.version}: its endpoint credential is not available")
        if kind == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        return {str(auth.get("headerName") or "api-key"): secret}

    # Publishing (operator and tenants)
    def publish_package(
        self,
        package_dir: Path,
        *,
        set_alias: str | None = DEFAULT_ALIAS,
        by: str = "build",
        tenant: str | None = None,
    ) -> bool:
        """Uploads a built package dir (card.json + artifact + files); True when it uploaded, False when the same
        version with the same bytes is there. `tenant` publishes it as that tenant's private model (checked by
        loading it, as the API does)."""
        card = json.loads((package_dir / "card.json").read_text())
        if not isinstance(card, dict):
            raise _bad(f"{package_dir}/card.json is not a JSON object")
        artifact = None
        if card.get("runtime") != REMOTE_RUNTIME:
            artifact_name = str((card.get("artifact") or {}).get("file", "model.onnx"))
            artifact = _read_package_file(package_dir, artifact_name)
        files = {
            str(item.get("file")): _read_package_file(package_dir, str(item.get("file")))
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
    ) -> dict[str, Any]:
        """A tenant's own model version: checked by loading it and running one record; returns its model view."""
        if card.get("runtime") == REMOTE_RUNTIME:
            _check_public_endpoint(str(card.get("endpoint", "")))
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
        """Publishes one version (public, or private to `owner`); see publish_package for the answer.

        Raises InvalidInput (code InvalidModelPackage) for a package that is wrong, AlreadyExists when the version
        exists with other bytes (VersionExists) or the name is taken in the other namespace (ModelNameTaken).
        """
        raw = _normalised_card(card_data, artifact, files, owner)
        card = ModelCard(raw)
        if card.raw.get("runtime") == REMOTE_RUNTIME:
            _check_remote_card(card, credential)
        self._check_name_free(card.owner, card.name)
        prefix = f"{_package_prefix(card.owner, card.name)}/{card.version}"
        try:
            existing = ModelCard(json.loads(self._blobs.read_bytes(self._container, f"{prefix}/card.json")))
        except NotFound:
            existing = None
        if existing is not None:
            if _package_digest(existing.raw) == _package_digest(raw):
                return False
            raise AlreadyExists(
                f"{card.name}@{card.version} exists with another package; versions are immutable, publish a new one",
                code="VersionExists",
            )
        if check and artifact is not None:
            _check_onnx_package(card, artifact, files)
        if credential:
            secret = json.dumps({"credential": credential}).encode()
            self._blobs.write_bytes(self._container, _secret_path(card.owner, card), secret)
        for name, data in files.items():
            self._blobs.write_bytes(self._container, f"{prefix}/{name}", data)
        if artifact is not None:
            self._blobs.write_bytes(self._container, f"{prefix}/{card.artifact_file}", artifact)
        self._blobs.write_bytes(
            self._container, f"{prefix}/card.json", json.dumps(raw, indent=2).encode(), content_type="application/json"
        )
        logger.info("published %s@%s%s", card.name, card.version, f" for tenant {owner}" if owner else "")
        self.refresh()
        path = f"{_package_prefix(card.owner, card.name)}/aliases.json"
        if set_alias and self._alias_doc(path, None)["aliases"].get(set_alias) is None:
            self.move_alias(card.name, set_alias, card.version, by=by, owner=card.owner)
        return True

    def _check_name_free(self, owner: str | None, name: str) -> None:
        if name in RESERVED_NAMES:
            raise _bad(f"model name {name!r} is reserved")
        catalogue = self._read_catalogue(max_age=0.0)
        if owner and (PUBLIC, name) in catalogue:
            raise AlreadyExists(f"{name!r} is the name of a public model; choose another", code="ModelNameTaken")
        if not owner and any(o and n == name for o, n in catalogue):
            raise AlreadyExists(f"{name!r} is already a tenant's private model name", code="ModelNameTaken")

    def move_alias(self, name: str, alias: str, version: str, *, by: str, owner: str | None = None) -> dict[str, Any]:
        """Points `alias` of the model (public, or `owner`'s private one) at an existing version and records who
        and when; returns the aliases with their history. Rolling back is moving it to the previous version."""
        if not SELECTOR_PATTERN.fullmatch(alias) or not SELECTOR_PATTERN.fullmatch(version):
            raise InvalidInput(f"alias {alias!r} or version {version!r} is not valid", code="InvalidAlias")
        prefix = _package_prefix(owner, name)
        try:
            self._blobs.get_info(self._container, f"{prefix}/{version}/card.json")
        except NotFound:
            raise UnknownModel(f"model {name!r} has no version {version!r}") from None
        if self._blob_exists(f"{prefix}/{alias}/card.json"):
            raise InvalidInput(
                f"{alias!r} is a version of {name!r}; an alias cannot share its name", code="InvalidAlias"
            )
        path = f"{prefix}/aliases.json"
        try:
            data = json.loads(self._blobs.read_bytes(self._container, path))
        except NotFound:
            data = {"aliases": {}, "history": []}
        data.setdefault("aliases", {})
        data.setdefault("history", [])
        data["history"].append(
            {"alias": alias, "from": data["aliases"].get(alias), "to": version, "by": by, "at": utcnow()}
        )
        data["aliases"][alias] = version
        # Last writer wins: alias moves are rare, operator-driven and each is recorded in the history it rewrites.
        self._blobs.write_bytes(
            self._container, path, json.dumps(data, indent=2).encode(), content_type="application/json"
        )
        logger.info("alias %s of %s now %s (by %s)", alias, name, version, by)
        self.refresh()
        return {"name": name, "aliases": dict(data["aliases"]), "history": list(data["history"])}

    def _blob_exists(self, path: str) -> bool:
        try:
            self._blobs.get_info(self._container, path)
        except NotFound:
            return False
        return True


def _public_card(card: ModelCard) -> dict[str, Any]:
    return {k: v for k, v in card.raw.items() if k not in {"buildKey", "buildEnvironment"}}


def _environment_secret(name: str) -> str | None:
    import os

    return os.environ.get(name)


def _secret_path(owner: str | None, card: ModelCard) -> str:
    return f"{SECRETS_PREFIX}/{owner or 'public'}/{card.name}/{card.version}.json"


def _read_package_file(package_dir: Path, name: str) -> bytes:
    if not FILE_NAME_PATTERN.fullmatch(name):
        raise _bad(f"package file name {name!r} is not a plain file name")
    try:
        return (package_dir / name).read_bytes()
    except FileNotFoundError:
        raise _bad(f"{package_dir} has no {name} though its card names it") from None


def _card_files(raw: dict[str, Any]) -> list[dict[str, Any]]:
    files = raw.get("files") or []
    if not isinstance(files, list) or not all(isinstance(item, dict) for item in files):
        raise _bad('card "files" must be a list of {"file", "sha256", "bytes"}')
    return files


def _package_digest(raw: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two publications of a version the same package: the bytes they carry (or the remote endpoint)."""
    files = tuple(sorted((str(f.get("file")), str(f.get("sha256"))) for f in _card_files(raw)))
    if raw.get("runtime") == REMOTE_RUNTIME:
        return (REMOTE_RUNTIME, raw.get("endpoint"), files)
    return (str((raw.get("artifact") or {}).get("sha256")), files)


def _normalised_card(
    card_data: dict[str, Any], artifact: bytes | None, files: dict[str, bytes], owner: str | None
) -> dict[str, Any]:
    """The card to store: validated, owner set, and the sha256/bytes of artifact and files filled in or checked."""
    raw = json.loads(json.dumps(card_data))  # a deep, JSON-only copy
    name, version = str(raw.get("name", "")), str(raw.get("version", ""))
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise _bad(f"card name {name!r} is not a valid model name (lower-case letters, digits, . _ -)")
    if not SELECTOR_PATTERN.fullmatch(version):
        raise _bad(f"card version {version!r} is not valid (letters, digits, . _ -)")
    if owner is not None and not TENANT_ID_PATTERN.fullmatch(owner):
        raise _bad(f"owner {owner!r} is not a tenant id")
    if raw.get("owner") and raw["owner"] != owner:
        raise _bad(f"the card names owner {raw['owner']!r}; a package can only be registered for its owner")
    if owner:
        raw["owner"] = owner
    else:
        raw.pop("owner", None)
    if not raw.get("handler"):
        raise _bad('the card needs a "handler"')
    input_types = raw.get("inputTypes")
    if not isinstance(input_types, list) or not input_types or not all(isinstance(t, str) for t in input_types):
        raise _bad('the card needs "inputTypes", e.g. [".jsonl", ".csv"]')
    for key, lowest in (("errorThreshold", -1), ("shardBytes", MIN_SHARD_BYTES)):
        value = raw.get(key)
        if value is not None and (type(value) is not int or value < lowest):
            raise _bad(f'card "{key}" must be a whole number of at least {lowest}, not {value!r}')
    if raw.get("runtime") == REMOTE_RUNTIME:
        if artifact is not None:
            raise _bad("a remote-oip model has no artifact: the endpoint runs it")
    else:
        if artifact is None:
            raise _bad("the package has no artifact")
        declared = raw.setdefault("artifact", {})
        if not isinstance(declared, dict):
            raise _bad('card "artifact" must be {"file", "sha256", "bytes"}')
        declared.setdefault("file", "model.onnx")
        if not FILE_NAME_PATTERN.fullmatch(str(declared["file"])) or declared["file"] == "card.json":
            raise _bad(f"artifact file name {declared['file']!r} is not a plain file name")
        _fill_digest(declared, artifact, "the artifact")
    seen = {"card.json", str((raw.get("artifact") or {}).get("file", ""))}
    for item in _card_files(raw):
        file_name = str(item.get("file", ""))
        if not FILE_NAME_PATTERN.fullmatch(file_name) or file_name in seen:
            raise _bad(f"package file name {file_name!r} is not a plain, unique file name")
        seen.add(file_name)
        if file_name not in files:
            raise _bad(f"the card names file {file_name!r} but the package does not carry it")
        _fill_digest(item, files[file_name], f"file {file_name!r}")
    extra = set(files) - seen
    if extra:
        raise _bad(f'files {sorted(extra)} are not named in the card\'s "files"')
    return dict(raw)


def _fill_digest(declared: dict[str, Any], data: bytes, what: str) -> None:
    digest = _sha256(data)
    if declared.get("sha256") and declared["sha256"] != digest:
        raise _bad(f"{what} does not match the card's sha256 ({digest} != {declared['sha256']})")
    declared["sha256"] = digest
    declared["bytes"] = len(data)


def build_predictor(card: ModelCard, artifact: bytes, files: dict[str, bytes], *, threads: int = 0) -> Predictor:
    """The card's handler over an ONNX Runtime session of the artifact (bytes already checked against the card)."""
    handler = HANDLERS.get(card.handler)
    if handler is None:
        raise RuntimeError(f"model {card.name}@{card.version}: no handler {card.handler!r}")
    session = new_session(artifact, threads=threads)
    from_package = getattr(handler, "from_package", None)
    predictor: Predictor = from_package(card, session, files) if callable(from_package) else handler(card, session)
    return predictor


def _check_onnx_package(card: ModelCard, artifact: bytes, files: dict[str, bytes]) -> None:
    """Loads the package as a worker would, checks the card's declared inputs, and runs one dummy record."""
    if card.handler not in HANDLERS:
        raise _bad(f"handler {card.handler!r} is not one of {sorted(HANDLERS)}")
    try:
        session = new_session(artifact)
    except Exception as err:  # onnxruntime's own errors: the bytes are not a model it can run
        raise _bad(f"the artifact is not an ONNX model ONNX Runtime can load: {err}") from err
    example = card.raw.get("exampleRecord")
    if "features" in card.raw:
        features = card.raw["features"]
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise _bad('"features" must be a non-empty list of feature names')
        if not isinstance(card.raw.get("labels"), list) or not card.raw["labels"]:
            raise _bad('a classifier card needs "labels"')
        input_name = (card.raw.get("onnx") or {}).get("inputName")
        inputs = {item.name: item for item in session.get_inputs()}
        onnx_input = inputs.get(input_name) if input_name else session.get_inputs()[0]
        if onnx_input is None:
            raise _bad(f"the ONNX model has no input {input_name!r} (it has {sorted(inputs)})")
        shape = list(onnx_input.shape)
        if len(shape) != 2 or shape[1] != len(features):
            raise _bad(
                f"the card declares {len(features)} features but the ONNX input {onnx_input.name!r} has shape {shape}"
            )
        if onnx_input.type != "tensor(float)":
            raise _bad(f"the ONNX input {onnx_input.name!r} is {onnx_input.type}; tabular models take float")
        example = example if example is not None else dict.fromkeys(features, 0.0)
    elif example is None and ".txt" in card.input_types:
        example = "An example sentence."
    try:
        handler = HANDLERS[card.handler]
        from_package = getattr(handler, "from_package", None)
        predictor = from_package(card, session, files) if callable(from_package) else handler(card, session)
        if example is not None:
            outputs = predictor.predict([predictor.prepare(example)])
            if len(outputs) != 1 or not isinstance(outputs[0], dict):
                raise ValueError(f"one record gave {outputs!r}, not one result object")
    except InvalidInput as err:
        raise _bad(f"the model refused a dummy record: {err.message}") from err
    except Exception as err:  # any failure here means the package cannot serve: say why
        raise _bad(f"the model failed on a dummy record: {err}") from err


def _check_remote_card(card: ModelCard, credential: str | None) -> None:
    endpoint = str(card.raw.get("endpoint", ""))
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or "/v2/models/" not in parts.path:
        raise _bad(f"endpoint {endpoint!r} must be an http(s) URL of an OIP model: https://host/v2/models/<model>")
    if parts.username or parts.password or parts.query:
        raise _bad("the endpoint URL must not carry credentials or a query; use the credential field")
    auth = card.raw.get("auth") or {"type": "none"}
    if not isinstance(auth, dict) or auth.get("type", "none") not in AUTH_TYPES:
        raise _bad(f'card "auth" must be {{"type": one of {sorted(AUTH_TYPES)}}}')
    if set(auth) - {"type", "headerName", "secretName"}:
        raise _bad('card "auth" names the kind of credential only; send the credential itself separately')
    if auth.get("secretName") and card.owner:
        raise _bad("a private model cannot name a platform secret; send the credential with the registration")
    needs_secret = auth.get("type", "none") != "none"
    if needs_secret and not credential and not auth.get("secretName"):
        raise _bad(f"auth type {auth['type']!r} needs a credential")
    if credential and not needs_secret:
        raise _bad('a credential was sent but card "auth" says type "none"')


def _check_public_endpoint(endpoint: str) -> None:
    """A tenant's endpoint must be https on a public address (a literal private address or localhost is refused)."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https":
        raise _bad("a private remote model's endpoint must use https")
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".internal"):
        raise _bad(f"endpoint host {host!r} is not a public address")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not address.is_global:
        raise _bad(f"endpoint host {host!r} is not a public address")


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (float("inf"), version)
