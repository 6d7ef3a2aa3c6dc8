"""The global tenant directory on Cosmos DB: one container `homes` (tenant id -> region and API URL)."""

from __future__ import annotations

import contextlib

from azure.cosmos import CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import CosmosResourceExistsError, CosmosResourceNotFoundError

from shared.adapters.cosmos import _container
from shared.domain.regions import TenantHome

DIRECTORY_CONTAINER = "homes"
# An Entra tenant's entry shares the container: "tid:<guid>" can never be a tenant id (no colon in one).
ENTRA_PREFIX = "tid:"


def directory_database(client: CosmosClient, database: str, *, create: bool) -> DatabaseProxy:
    """The directory's database; created with its container only when asked (locally). In Azure global.bicep
    creates them and each stamp's identity may only read (a data-plane role cannot create databases anyway)."""
    if not create:
        return client.get_database_client(database)
    # Every stamp of `aiaas up --regions` makes the shared directory at start: "if not exists" is a read then a
    # create, so of two stamps racing, one gets 409 Conflict for what the other just made, which is success here.
    try:
        db = client.create_database_if_not_exists(database)
    except CosmosResourceExistsError:
        db = client.get_database_client(database)
    with contextlib.suppress(CosmosResourceExistsError):
        # Read by tenant id only: the id is the partition key, a point read per lookup.
        db.create_container_if_not_exists(DIRECTORY_CONTAINER, partition_key=PartitionKey(path="/id"))
    return db


class CosmosTenantDirectory:
    def __init__(self, db: DatabaseProxy) -> None:
        self._c = _container(db, DIRECTORY_CONTAINER)

    def home_of(self, tenant_id: str) -> TenantHome | None:
        return self._read(tenant_id)

    def place(self, home: TenantHome) -> TenantHome:
        return self._create(home.tenant_id, home)

    def home_of_entra(self, tid: str) -> TenantHome | None:
        return self._read(ENTRA_PREFIX + tid)

    def place_entra(self, tid: str, home: TenantHome) -> TenantHome:
        return self._create(ENTRA_PREFIX + tid, home)

    def _read(self, doc_id: str) -> TenantHome | None:
        try:
            return TenantHome.from_doc(self._c.read_item(doc_id, partition_key=doc_id))
        except CosmosResourceNotFoundError:
            return None

    def _create(self, doc_id: str, home: TenantHome) -> TenantHome:
        try:
            self._c.create_item({**home.to_doc(), "id": doc_id})
        except CosmosResourceExistsError:
            earlier = self._read(doc_id)
            return earlier if earlier is not None else home
        return home
