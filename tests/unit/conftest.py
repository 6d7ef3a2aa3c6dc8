"""Fixtures of the unit suite: a Platform over the in-memory fakes, with the built model published."""

from __future__ import annotations

import pytest

from shared.services.platform import Platform
from tests.fakes import Fakes, add_tenant, fakes_of, make_platform


@pytest.fixture
def platform() -> Platform:
    plat = make_platform()
    add_tenant(plat, "acme")
    return plat


@pytest.fixture
def fakes(platform: Platform) -> Fakes:
    return fakes_of(platform)
