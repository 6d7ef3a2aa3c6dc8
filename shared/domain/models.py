"""Model references (`name[@version|@alias]`) and model cards."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.domain.errors import InvalidInput

MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
SELECTOR_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_ALIAS = "production"


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
