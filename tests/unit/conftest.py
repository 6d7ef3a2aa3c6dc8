"""Fixtures of the unit suite: a Platform over the in-memory fakes, with the built model published."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from shared.services.platform import Platform
from tests.fakes import Fakes, add_tenant, fakes_of, make_platform


@pytest.fixture(autouse=True)
def _no_platform_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A unit test sees no AIAAS_ setting it did not set: the e2e stack (a session fixture) exports its own
    development settings into this process for as long as it runs, and the suite runs e2e first."""
    from shared.config import get_settings

    for name in [name for name in os.environ if name.startswith("AIAAS_")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def platform() -> Platform:
    plat = make_platform()
    add_tenant(plat, "acme")
    return plat


@pytest.fixture
def fakes(platform: Platform) -> Fakes:
    return fakes_of(platform)
