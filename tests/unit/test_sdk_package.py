"""The SDK's distribution (clients/python): its runtime dependencies start at the versions the platform pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def test_each_runtime_dependency_starts_at_the_pinned_version() -> None:
    project = tomllib.loads((REPO / "clients/python/pyproject.toml").read_text())["project"]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "constraints.txt").read_text(), flags=re.M))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}

    requirements = [Requirement(text) for text in project["dependencies"]]

    assert sorted(r.name for r in requirements) == ["httpx", "pydantic"]
    for requirement in requirements:
        pinned = pins[requirement.name]
        assert requirement.specifier.contains(pinned), (requirement, pinned)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert lower == [pinned], f"{requirement.name}: tested with {pinned}, so the SDK asks for at least that"
