"""Loading: a model version's bytes read and verified against its card, a Predictor built over them, and the
models of this process kept in a least-recently-used cache bounded by bytes (MLServer's runtime side).

Public models load in this process with the operator's thread setting. A tenant's own ONNX model never has its
session here: for batch jobs its handler runs here over a session in a sandbox child (sandbox_session.py), and
with `isolated` (the API's online calls) handler and session both run in the child (sandbox.py); either way with
bounded session options (predictors.BOUNDED_MAX_THREADS, basic optimisations, no arena) and rlimits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shared.domain.errors import NotFound
from shared.domain.models import ModelCard
from shared.inference.packages import PUBLIC, REMOTE_RUNTIME, card_files, credential_name, package_prefix, sha256
from shared.inference.predictors import build_predictor
from shared.inference.sandbox import SandboxPool
from shared.ports import BlobStore, Predictor, SecretStore

logger = logging.getLogger(__name__)
DEFAULT_MEMORY_BUDGET_BYTES = 1024**3
REMOTE_FOOTPRINT_BYTES = 64 * 1024
SANDBOX_FOOTPRINT_BYTES = 4 * 1024  # the model's bytes live in the child, not here


@dataclass
class _Loaded:
    predictor: Predictor
    size: int


def environment_secret(name: str) -> str | None:
    import os

    return os.environ.get(name)


class ModelLoader:
    """Builds Predictors from the `models` container and keeps them within a byte budget."""

    def __init__(
        self,
        blobs: BlobStore,
        container: str,
        *,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        secrets: SecretStore | None = None,
        secret_lookup: Callable[[str], str | None] | None = None,
        onnx_threads: int = 0,
        sandboxes: SandboxPool | None = None,
    ) -> None:
        self._blobs = blobs
        self._container = container
        self._memory_budget = memory_budget_bytes
        self._secrets = secrets
        self._secret_lookup = secret_lookup or environment_secret
        self._onnx_threads = onnx_threads
        self._sandboxes = sandboxes
        self._lock = threading.Lock()
        self._loaded: OrderedDict[tuple[str, str, str, bool], _Loaded] = OrderedDict()
        self._loaded_bytes = 0

    def load(self, card: ModelCard, *, isolated: bool = False) -> Predictor:
        """The model ready to predict; `isolated`: a tenant's ONNX model runs in a sandbox child (public and
        remote models are unaffected)."""
        isolated = isolated and bool(card.owner) and card.raw.get("runtime") != REMOTE_RUNTIME
        key = (card.owner or PUBLIC, card.name, card.version, isolated)
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None:
                self._loaded.move_to_end(key)
                return cached.predictor
        started = time.perf_counter()
        predictor: Predictor
        if card.raw.get("runtime") == REMOTE_RUNTIME:
            predictor, size = self._load_remote(card), REMOTE_FOOTPRINT_BYTES
        elif isolated:
            from shared.inference.sandbox_session import SandboxedPredictor

            pool = self._sandbox_pool()
            predictor = SandboxedPredictor(card, pool, pool.register(card, lambda: self.read_package(card), "serve"))
            size = SANDBOX_FOOTPRINT_BYTES
        elif card.owner:  # a tenant's model: its session in a sandbox child, its handler here
            predictor, size = self._load_private(card)
        else:
            artifact, files = self.read_package(card)
            predictor = build_predictor(card, artifact, files, threads=self._onnx_threads)
            size = len(artifact) + sum(len(data) for data in files.values())
        logger.info("loaded %s@%s in %.0f ms", card.name, card.version, (time.perf_counter() - started) * 1000)
        self._remember(key, predictor, size)
        return predictor

    def _load_private(self, card: ModelCard) -> tuple[Predictor, int]:
        from shared.inference.predictors import HANDLERS, handler_over
        from shared.inference.sandbox_session import SessionProxy

        if card.handler not in HANDLERS:
            raise RuntimeError(f"model {card.name}@{card.version}: no handler {card.handler!r}")
        files = self.read_package(card)[1]
        session = SessionProxy(self._sandbox_pool(), card, lambda: self.read_package(card))
        predictor: Predictor = handler_over(card, session, files)
        return predictor, SANDBOX_FOOTPRINT_BYTES + sum(len(data) for data in files.values())

    def _sandbox_pool(self) -> SandboxPool:
        with self._lock:
            if self._sandboxes is None:
                self._sandboxes = SandboxPool()
            return self._sandboxes

    def _remember(self, key: tuple[str, str, str, bool], predictor: Predictor, size: int) -> None:
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
            return {f"{key[1]}@{key[2]}": item.size for key, item in self._loaded.items() if not key[3]}

    def read_package(self, card: ModelCard) -> tuple[bytes, dict[str, bytes]]:
        prefix = f"{package_prefix(card.owner, card.name)}/{card.version}"
        artifact = self._blobs.read_bytes(self._container, f"{prefix}/{card.artifact_file}")
        digest = sha256(artifact)
        if digest != card.artifact_sha256:
            raise RuntimeError(
                f"model {card.name}@{card.version}: artifact sha256 {digest} does not match its card; refusing it"
            )
        files: dict[str, bytes] = {}
        for item in card_files(card.raw):
            data = self._blobs.read_bytes(self._container, f"{prefix}/{item['file']}")
            if sha256(data) != item["sha256"]:
                raise RuntimeError(
                    f"model {card.name}@{card.version}: file {item['file']} does not match its card's sha256"
                )
            files[str(item["file"])] = data
        return artifact, files

    def read_file(self, card: ModelCard, name: str) -> bytes:
        """One file the card lists, checked against its sha256 (a drift profile, say) without the artifact."""
        item = next((item for item in card_files(card.raw) if item.get("file") == name), None)
        if item is None:
            raise NotFound(f"model {card.name}@{card.version} lists no file {name!r}")
        prefix = f"{package_prefix(card.owner, card.name)}/{card.version}"
        data = self._blobs.read_bytes(self._container, f"{prefix}/{name}")
        if sha256(data) != item["sha256"]:
            raise RuntimeError(f"model {card.name}@{card.version}: file {name} does not match its card's sha256")
        return data

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
        elif self._secrets is None:
            raise RuntimeError(f"model {card.name}@{card.version}: no secret store holds its endpoint credential")
        else:
            try:
                secret = self._secrets.get(card.owner or PUBLIC, credential_name(card))
            except NotFound:
                secret = None
        if not secret:
            raise RuntimeError(f"model {card.name}@{card.version}: its endpoint credential is not available")
        if kind == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        return {str(auth.get("headerName") or "api-key"): secret}

    def close(self) -> None:
        if self._sandboxes is not None:
            self._sandboxes.close()
