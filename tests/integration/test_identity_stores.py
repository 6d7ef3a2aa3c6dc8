"""Identity stores on the Cosmos stand-in: keys in the tenant document, the Entra tenant map, the append-only
audit log, and a key revoked through one API process refused by another at once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.adapters.cosmos import CosmosTenantStore, ensure_schema
from shared.adapters.cosmos_client import make_cosmos_client
from shared.adapters.cosmos_identity import CosmosAuditLog, CosmosEntraTenantMap, ensure_identity_schema
from shared.api.app import create_app
from shared.domain.audit import AuditEntry
from shared.domain.errors import AlreadyExists, NotFound
from shared.domain.tenants import ADMIN, READER
from shared.localhost.emulators import CosmosServer
from shared.services.platform import Platform
from shared.services.tenants import create_key, create_tenant
from tests.fakes import make_platform

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db_name(cosmos: CosmosServer) -> str:
    name = f"id{uuid.uuid4().hex[:8]}"
    ensure_identity_schema(ensure_schema(make_cosmos_client(cosmos.endpoint, cosmos.key), name))
    return name


def db_of(cosmos: CosmosServer, db_name: str) -> Any:
    """The database on a client of its own, as another process would have."""
    return make_cosmos_client(cosmos.endpoint, cosmos.key).get_database_client(db_name)


def platform_of(cosmos: CosmosServer, db_name: str) -> Platform:
    """One API process's Platform: tenants, the Entra map and the audit log on the stand-in, the rest fakes."""
    db = db_of(cosmos, db_name)
    platform = make_platform()
    platform.tenants = CosmosTenantStore(db)
    platform.identities = CosmosEntraTenantMap(db)
    platform.audit = CosmosAuditLog(db)
    return platform


def tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def test_one_entra_tenant_maps_to_exactly_one_tenant(cosmos: CosmosServer, db_name: str) -> None:
    first, second = CosmosEntraTenantMap(db_of(cosmos, db_name)), CosmosEntraTenantMap(db_of(cosmos, db_name))
    tid = str(uuid.uuid4())
    first.map_tenant(tid, "alpha")

    with pytest.raises(AlreadyExists):
        second.map_tenant(tid, "beta")
    assert second.tenant_for(tid) == "alpha"
    with pytest.raises(NotFound):
        second.tenant_for(str(uuid.uuid4()))


def test_tenants_create_maps_the_entra_tenant_and_refuses_one_already_taken(cosmos: CosmosServer, db_name: str) -> None:
    platform = platform_of(cosmos, db_name)
    tid = str(uuid.uuid4())
    create_tenant(platform, (owner := tenant_id()), entra_tenant=tid)

    with pytest.raises(AlreadyExists):
        create_tenant(platform, (late := tenant_id()), entra_tenant=tid)
    assert platform.identities.tenant_for(tid) == owner
    with pytest.raises(NotFound):  # refused before the tenant was made: no tenant with a key nobody saw
        platform.tenants.get_tenant(late)
    assert platform.tenants.get_tenant(owner).entra_tenant == tid


def entry(tenant: str, action: str = "jobs.submit", **fields: Any) -> AuditEntry:
    base = {"actor_kind": "key", "actor_id": "k1", "action": action, "target": "/api/v1/jobs"}
    return AuditEntry.new(tenant, **{**base, "outcome": "succeeded", "request_id": uuid.uuid4().hex, **fields})


def test_the_audit_log_lists_a_tenants_entries_newest_first_in_pages(cosmos: CosmosServer, db_name: str) -> None:
    log = CosmosAuditLog(db_of(cosmos, db_name))
    tenant, other = tenant_id(), tenant_id()
    written = [entry(tenant, "keys.create" if i % 2 else "jobs.submit") for i in range(7)]
    for item in written:
        log.append(item)
    log.append(entry(other))

    pages, cursor = [], None
    while True:
        page, cursor = log.list_entries(tenant, limit=3, continuation=cursor)
        pages.append(page)
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e.entry_id for p in pages for e in p] == [e.entry_id for e in reversed(written)]

    keys_only, _ = log.list_entries(tenant, action="keys.create", limit=100)
    assert [e.entry_id for e in keys_only] == [e.entry_id for e in reversed(written) if e.action == "keys.create"]
    recent, _ = log.list_entries(tenant, since=written[5].time, limit=100)
    assert [e.entry_id for e in recent] == [written[6].entry_id, written[5].entry_id]
    assert [e.tenant_id for e in log.list_entries(other, limit=100)[0]] == [other]


def test_entries_that_share_a_time_are_each_listed_once_across_pages(cosmos: CosmosServer, db_name: str) -> None:
    log = CosmosAuditLog(db_of(cosmos, db_name))
    tenant = tenant_id()
    same = "2026-06-01T00:00:00.000000Z"
    ids = set()
    for _ in range(5):
        item = AuditEntry(tenant, "key", "k", "jobs.submit", "/t", "succeeded", "r", 202, same, uuid.uuid4().hex)
        log.append(item)
        ids.add(item.entry_id)

    seen, cursor = [], None
    while True:
        page, cursor = log.list_entries(tenant, limit=2, continuation=cursor)
        seen += [e.entry_id for e in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)


def test_the_audit_adapter_has_no_way_to_change_or_remove_an_entry() -> None:
    public = {name for name in dir(CosmosAuditLog) if not name.startswith("_")}

    assert public == {"append", "list_entries"}


def test_a_key_revoked_through_one_api_process_is_refused_by_another_at_once(
    cosmos: CosmosServer, db_name: str
) -> None:
    one, two = platform_of(cosmos, db_name), platform_of(cosmos, db_name)
    owner = tenant_id()
    admin = create_tenant(one, owner)
    first = TestClient(create_app(lambda: one), raise_server_exceptions=False)
    second = TestClient(create_app(lambda: two), raise_server_exceptions=False)
    created = first.post(
        "/api/v1/keys", json={"name": "temp", "role": READER}, headers={"Authorization": f"Bearer {admin}"}
    ).json()
    key = {"Authorization": f"Bearer {created['key']}"}
    assert second.get("/api/v1/jobs", headers=key).status_code == 200

    assert (
        first.delete(f"/api/v1/keys/{created['id']}", headers={"Authorization": f"Bearer {admin}"}).status_code == 204
    )

    assert second.get("/api/v1/jobs", headers=key).status_code == 401
    entries = two.audit.list_entries(owner, limit=10)[0]
    assert [(e.action, e.outcome) for e in entries] == [
        ("jobs.list", "denied"),  # the revoked key's attempt
        ("keys.revoke", "succeeded"),
        ("keys.create", "succeeded"),
    ]


def test_concurrent_key_writes_on_one_tenant_all_land(cosmos: CosmosServer, db_name: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    platforms = [platform_of(cosmos, db_name) for _ in range(4)]
    owner = tenant_id()
    create_tenant(platforms[0], owner)
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda p: create_key(p, owner, "k", ADMIN)[0].key_id, platforms * 2))

    stored = {key.key_id for key in platforms[0].tenants.get_tenant(owner).keys}
    assert set(made) <= stored and len(stored) == 9
