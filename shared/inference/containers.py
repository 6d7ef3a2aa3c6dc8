"""Container models: images in a container registry whose labels describe a model (deployment class 2), turned
into remote-oip cards the catalogue lists beside the blob packages, and run through the Open Inference Protocol.

Label schema (image config `Labels`, as `LABEL` in a Dockerfile writes them; values are strings):

    ai.aiaas.model        the model name (required: an image without it is no model and is ignored)
    ai.aiaas.version      the version (default: the tag)
    ai.aiaas.endpoint     the OIP (KServe V2) URL where the running container serves the model,
                          https://host/v2/models/<model>[/versions/<v>] (required)
    ai.aiaas.task         e.g. "tabular-classification", "text-embedding"
    ai.aiaas.input-types  ".jsonl,.csv" or a JSON list (required)
    ai.aiaas.handler      default "tabular-classifier" when the card has features, else "text"
    ai.aiaas.description  (else org.opencontainers.image.description)
    ai.aiaas.tag.<key>    card tags (`GET /api/v1/models?tag=key:value` filters on them)
    ai.aiaas.card         a JSON object of further card fields: features, labels, oip, auth (secretName only),
                          metrics, parameters, exampleRecord, inputSchema, outputSchema, ...

The card is checked as a published remote card is (packages.normalised_card, check_remote_card); an image whose
labels make no valid card is refused with its reason (logged, kept in `refused`), never taken half. Container
models are the operator's (the registry is the platform's own), so they are public; a blob package of the same
name wins over them (and a tenant cannot register a private one under a container model's name). Aliases: an
aliases.json in the models container (operator moves) as for any model, else `production` is the newest version.
The registry is listed at most every CONTAINER_TTL_SECONDS; an image's labels are read once per manifest digest.

Who runs the container: not the platform. In Azure the operator deploys the image where it serves the V2 protocol
(Azure Container Apps with external ingress, or AKS with KServe / Triton) and labels it with that URL; batch jobs
and /api/v2 reach it through the egress policy like any remote-oip model (public addresses only).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shared.domain.errors import InvalidInput
from shared.domain.models import DEFAULT_ALIAS, ModelCard
from shared.inference.packages import PUBLIC, REMOTE_RUNTIME, check_remote_card, normalised_card, version_key

if TYPE_CHECKING:
    from shared.inference.catalogue import Entry

logger = logging.getLogger(__name__)
LABEL_PREFIX = "ai.aiaas."
MODEL_LABEL = LABEL_PREFIX + "model"
CARD_LABEL = LABEL_PREFIX + "card"
TAG_LABEL_PREFIX = LABEL_PREFIX + "tag."
CONTAINER_TTL_SECONDS = 60.0
# Card fields the labels set themselves, or that a container model cannot have (it has no package in the store).
_NOT_IN_CARD_LABEL = frozenset({"name", "version", "owner", "runtime", "endpoint", "artifact", "files"})


@dataclass(frozen=True)
class ImageLabels:
    """One tagged image of a registry: where it is and its config's labels (or why they could not be read)."""

    registry: str
    repository: str
    tag: str
    digest: str
    labels: dict[str, str]
    problem: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


class ImageLister(Protocol):
    """A container registry, as the catalogue needs it (shared.adapters.acr.RegistryImageLister)."""

    def list_images(self) -> Iterable[ImageLabels]: ...


@dataclass(frozen=True)
class Refusal:
    image: str
    reason: str


def card_from_labels(image: ImageLabels) -> dict[str, Any] | None:
    """The remote-oip card an image's labels describe; None when the image is no model; InvalidInput (with the
    reason) when it claims to be one but its labels make no valid card."""
    labels = image.labels
    if image.problem:  # unreadable: perhaps a model, so never silently skipped
        raise InvalidInput(f"the image could not be read: {image.problem}")
    if MODEL_LABEL not in labels:
        return None
    extra: dict[str, Any] = {}
    if CARD_LABEL in labels:
        try:
            extra = json.loads(labels[CARD_LABEL])
        except ValueError as err:
            raise InvalidInput(f"label {CARD_LABEL} is not JSON: {err}") from None
        if not isinstance(extra, dict):
            raise InvalidInput(f"label {CARD_LABEL} must be a JSON object of card fields")
        clash = sorted(_NOT_IN_CARD_LABEL & set(extra))
        if clash:
            raise InvalidInput(f"label {CARD_LABEL} may not set {', '.join(clash)} (labels of their own, or none)")
    card: dict[str, Any] = dict(extra)
    card.update(
        name=labels[MODEL_LABEL],
        version=labels.get(LABEL_PREFIX + "version") or image.tag,
        runtime=REMOTE_RUNTIME,
        endpoint=labels.get(LABEL_PREFIX + "endpoint", ""),
    )
    for key, label in (("task", "task"), ("handler", "handler"), ("description", "description")):
        if LABEL_PREFIX + label in labels:
            card[key] = labels[LABEL_PREFIX + label]
    if "description" not in card and "org.opencontainers.image.description" in labels:
        card["description"] = labels["org.opencontainers.image.description"]
    if LABEL_PREFIX + "input-types" in labels:
        card["inputTypes"] = _list_label(labels[LABEL_PREFIX + "input-types"])
    card.setdefault("handler", "tabular-classifier" if card.get("features") else "text")
    tags = {k.removeprefix(TAG_LABEL_PREFIX): v for k, v in labels.items() if k.startswith(TAG_LABEL_PREFIX)}
    if tags:
        own = card.get("tags")
        card["tags"] = {**(own if isinstance(own, dict) else {}), **tags}
    card["source"] = {
        "container": {
            "registry": image.registry,
            "repository": image.repository,
            "tag": image.tag,
            "digest": image.digest,
        }
    }
    if not card["endpoint"]:
        raise InvalidInput(f"label {LABEL_PREFIX}endpoint is missing: where does the running container serve it?")
    checked = normalised_card(card, None, {}, None)
    check_remote_card(ModelCard(checked), None)
    return checked


def _list_label(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as err:
            raise InvalidInput(f"label {LABEL_PREFIX}input-types is not a JSON list: {err}") from None
        if not isinstance(items, list):
            raise InvalidInput(f"label {LABEL_PREFIX}input-types must be a list")
        return [str(item) for item in items]
    return [part.strip() for part in text.split(",") if part.strip()]


class ContainerModels:
    """The container models of one registry, listed at most every `ttl` seconds; the last good list is kept
    while the registry cannot be reached (the blob catalogue goes on either way)."""

    def __init__(
        self,
        lister: ImageLister,
        *,
        ttl: float = CONTAINER_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cards: list[ModelCard] = []
        self._refused: list[Refusal] = []
        self._read_at = float("-inf")

    def refresh(self) -> None:
        with self._lock:
            self._read_at = float("-inf")

    def cards(self) -> list[ModelCard]:
        with self._lock:
            if self._clock() - self._read_at < self._ttl:
                return self._cards
        try:
            images = sorted(self._lister.list_images(), key=lambda i: (i.repository, i.tag))
        except Exception:
            logger.exception(
                "the container registry could not be listed; keeping the %d known models", len(self._cards)
            )
            with self._lock:
                self._read_at = self._clock()  # not again on every request while it is down
                return self._cards
        cards: list[ModelCard] = []
        refused: list[Refusal] = []
        seen: dict[tuple[str, str], str] = {}
        for image in images:
            try:
                raw = card_from_labels(image)
            except InvalidInput as err:
                refused.append(Refusal(image.reference, str(err)))
                logger.warning("container image %s is refused as a model: %s", image.reference, err)
                continue
            if raw is None:
                continue
            key = (str(raw["name"]), str(raw["version"]))
            if key in seen:
                reason = f"{key[0]}@{key[1]} is already the image {seen[key]}"
                refused.append(Refusal(image.reference, reason))
                logger.warning("container image %s is refused as a model: %s", image.reference, reason)
                continue
            seen[key] = image.reference
            cards.append(ModelCard(raw))
        with self._lock:
            self._cards, self._refused, self._read_at = cards, refused, self._clock()
        return cards

    def refused(self) -> list[Refusal]:
        """The images that claimed to be models but were not taken, each with why (as of the last listing)."""
        self.cards()
        with self._lock:
            return list(self._refused)

    def find(self, *, task: str | None = None, input_type: str | None = None) -> list[ModelCard]:
        """The container models of a task and/or taking an input type (e.g. ".csv")."""
        wanted = input_type.lower() if input_type else None
        return [
            card
            for card in self.cards()
            if (task is None or card.task == task) and (wanted is None or wanted in map(str.lower, card.input_types))
        ]

    def alias(self, name: str, alias: str) -> str | None:
        """The version an alias of a container model names when no aliases.json moved it: `production` is its
        newest version (as the catalogue's model view shows it), any other alias is unknown."""
        if alias != DEFAULT_ALIAS:
            return None
        versions = [card.version for card in self.cards() if card.name == name]
        return max(versions, key=version_key) if versions else None

    def merge_into(self, entries: dict[tuple[str, str], Entry]) -> None:
        """Adds the container models to the blob catalogue's entries as public models; a name the blob catalogue
        already has (public or any tenant's) keeps its packages only."""
        from shared.inference.catalogue import Entry

        taken = {name for _, name in entries}
        for card in self.cards():
            if card.name in taken:
                logger.warning(
                    "container model %s@%s: the name is a registered package's; ignored", card.name, card.version
                )
                continue
            entries.setdefault((PUBLIC, card.name), Entry()).versions[card.version] = card
