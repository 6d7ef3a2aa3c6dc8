"""Shared pytest fixtures: the local Azure stand-ins, started once per test session on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.localhost.emulators import Azurite, CosmosServer, free_port


def pytest_configure(config: pytest.Config) -> None:
    # The Cosmos stand-in's certificate is self-signed, so make_cosmos_client skips TLS verification for
    # loopback endpoints; pytest resets runtime warning filters per test, so repeat that filter here
    # (IPv4 loopback and localhost; the ini syntax cannot hold '::1').
    config.addinivalue_line(
        "filterwarnings",
        r"ignore:Unverified HTTPS request is being made to host '(localhost|127\.[0-9.]+)'"
        ":urllib3.exceptions.InsecureRequestWarning",
    )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A running Azurite (blob/queue/table) with its workspace in a session temp dir."""
    server = Azurite(
        data_dir=tmp_path_factory.mktemp("azurite"),
        blob_port=free_port(),
        queue_port=free_port(),
        table_port=free_port(),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cosmos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosServer]:
    """A running Cosmos DB stand-in (in-memory; HTTPS with a self-signed certificate)."""
    server = CosmosServer(data_dir=tmp_path_factory.mktemp("cosmos"), port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
