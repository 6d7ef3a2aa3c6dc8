"""The global tenant directory on the Cosmos stand-in: one home per tenant and per Entra tid, seen by every stamp."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.cosmos_client import make_cosmos_client
from shared.adapters.cosmos_directory import CosmosTenantDirectory, directory_database
from shared.domain.regions import TenantHome
from shared.localhost.emulators import CosmosServer

pytestmark = pytest.mark.integration


def directory(cosmos: CosmosServer, name: str, *, create: bool) -> CosmosTenantDirectory:
    """The directory on a client of its own, as each stamp's process has."""
    return CosmosTenantDirectory(
        directory_database(make_cosmos_client(cosmos.endpoint, cosmos.key), name, create=create)
    )


def test_a_tenant_gets_one_home_and_every_stamp_reads_it(cosmos: CosmosServer) -> None:
    name = f"dir{uuid.uuid4().hex[:8]}"
    writer = directory(cosmos, name, create=True)
    reader = directory(cosmos, name, create=False)  # a stamp: it never creates the database
    assert reader.home_of("acme") is None

    first = TenantHome("acme", "westeurope", "https://weu.example/api")
    assert writer.place(first) == first
    # A second placement elsewhere keeps the first home: the caller sees it and refuses.
    held = writer.place(TenantHome("acme", "eastus2", "https://eus.example/api"))
    assert (held.region, held.api_url) == ("westeurope", "https://weu.example/api")
    assert reader.home_of("acme") == TenantHome("acme", "westeurope", "https://weu.example/api", held.created_at)

    tid = str(uuid.uuid4())
    assert reader.home_of_entra(tid) is None
    writer.place_entra(tid, held)
    assert writer.place_entra(tid, TenantHome("other", "eastus2", "x")).tenant_id == "acme"
    entra_home = reader.home_of_entra(tid)
    assert entra_home is not None and (entra_home.tenant_id, entra_home.region) == ("acme", "westeurope")
    # The tid's entry is no tenant's: a tenant id never has a colon.
    assert reader.home_of(f"tid:{tid}") is not None and reader.home_of(tid) is None


def test_a_stamp_without_the_directory_database_finds_no_home(cosmos: CosmosServer) -> None:
    assert directory(cosmos, f"missing{uuid.uuid4().hex[:8]}", create=False).home_of("acme") is None


def test_stamps_starting_together_all_get_the_directory(cosmos: CosmosServer) -> None:
    """`aiaas up --regions` starts its stamps at once and each makes the shared directory: one of two racing
    "create if not exists" calls gets 409 Conflict, which must be taken as the directory being there."""
    import threading

    name = f"race{uuid.uuid4().hex[:8]}"
    start = threading.Barrier(6)
    failures: list[BaseException] = []
    made: list[CosmosTenantDirectory] = []

    def stamp() -> None:
        client = make_cosmos_client(cosmos.endpoint, cosmos.key)
        start.wait()
        try:
            made.append(CosmosTenantDirectory(directory_database(client, name, create=True)))
        except BaseException as err:  # what a stamp would have died of
            failures.append(err)

    threads = [threading.Thread(target=stamp) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == [] and len(made) == 6
    home = TenantHome("acme", "westeurope", "https://weu.example/api")
    made[0].place(home)
    assert all(d.home_of("acme") is not None for d in made)
