"""Model references (`name[@version|@alias]`) and model cards."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.domain.errors import InvalidInput

MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
SELECTOR_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_ALIAS = "production"
MIN_SHARD_BYTES = 1024


@dataclass(frozen=True)
class ModelRef:
    """What a caller asked for: a name and optionally a version or an alias (default: the production alias)."""

    name: str
    selector: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, selector = (text or "").partition("@")
        if not MODEL_NAME_PATTERN.fullmatch(name):
            raise InvalidInput(f"model name {name!r} is not valid", code="InvalidModelName")
        if selector and not SELECTOR_PATTERN.fullmatch(selector):
            raise InvalidInput(f"model version or alias {selector!r} is not valid", code="InvalidModelName")
        return cls(name=name, selector=selector or None)

    def __str__(self) -> str:
        return f"{self.name}@{self.selector}" if self.selector else self.name


@dataclass(frozen=True)
class ModelCard:
    """A model version's card: the package's description of itself (kept whole in `raw`)."""

    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def version(self) -> str:
        return str(self.raw["version"])

    @property
    def task(self) -> str:
        return str(self.raw.get("task", ""))

    @property
    def handler(self) -> str:
        return str(self.raw.get("handler", ""))

    @property
    def input_types(self) -> tuple[str, ...]:
        return tuple(self.raw.get("inputTypes", ()))

    @property
    def owner(self) -> str | None:
        """The tenant a private model belongs to; None for the platform's public catalogue."""
        owner = self.raw.get("owner")
        return str(owner) if owner else None

    @property
    def artifact_sha256(self) -> str:
        return str(self.raw["artifact"]["sha256"])

    @property
    def artifact_file(self) -> str:
        return str(self.raw["artifact"].get("file", "model.onnx"))

    @property
    def shard_bytes(self) -> int | None:
        """Bytes of a line-oriented file per shard for this model (heavy models want smaller shards); None: the
        platform's default. The registry refuses a card whose value is under MIN_SHARD_BYTES."""
        value = self.raw.get("shardBytes")
        return None if value is None else int(value)

    @property
    def error_threshold(self) -> int | None:
        value = self.raw.get("errorThreshold")
        return None if value is None else int(value)

    def check_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The job parameters if the card declares them all with the right types; InvalidInput otherwise."""
        declared: dict[str, Any] = self.raw.get("parameters") or {}
        unknown = sorted(set(parameters) - set(declared))
        if unknown:
            accepted = ", ".join(sorted(declared)) or "none"
            raise InvalidInput(
                f"model {self.name} takes no parameter {', '.join(unknown)} (it takes: {accepted})",
                code="InvalidParameters",
            )
        for name, value in parameters.items():
            _check_value(name, value, declared[name])
        return parameters

    def visible_to(self, tenant_id: str) -> bool:
        return self.owner is None or self.owner == tenant_id

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "description": self.raw.get("description", ""),
            "inputTypes": list(self.input_types),
            "metrics": self.raw.get("metrics", {}),
            "tags": self.raw.get("tags", {}),
        }


def _check_value(name: str, value: Any, spec: dict[str, Any]) -> None:
    kind = spec.get("type")
    if kind == "string" and not isinstance(value, str):
        raise InvalidInput(f"parameter {name!r} must be a string", code="InvalidParameters")
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidInput(f"parameter {name!r} must be a number", code="InvalidParameters")
    if kind == "array":
        if not isinstance(value, list):
            raise InvalidInput(f"parameter {name!r} must be a list", code="InvalidParameters")
        low, high = spec.get("minItems", 0), spec.get("maxItems", 10_000)
        if not low <= len(value) <= high:
            raise InvalidInput(f"parameter {name!r} needs {low} to {high} items", code="InvalidParameters")
        if spec.get("items", {}).get("type") == "string" and not all(isinstance(v, str) and v for v in value):
            raise InvalidInput(f"parameter {name!r} must hold non-empty strings", code="InvalidParameters")
