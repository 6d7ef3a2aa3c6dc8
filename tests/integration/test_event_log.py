"""The event log on the Cosmos stand-in: upserts by tenant and id, point reads, newest-first listing with filters
and keyset paging, every read confined to the tenant."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from shared.adapters.cosmos import ensure_schema
from shared.adapters.cosmos_client import make_cosmos_client
from shared.adapters.cosmos_events import (
    EVENTS_CONTAINER,
    EVENTS_INDEXING,
    EVENTS_TTL_SECONDS,
    CosmosEventLog,
    ensure_events_container,
)
from shared.domain.events import PlatformEvent
from shared.localhost.emulators import CosmosServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db_name(cosmos: CosmosServer) -> str:
    name = f"evl{uuid.uuid4().hex[:8]}"
    ensure_events_container(ensure_schema(make_cosmos_client(cosmos.endpoint, cosmos.key), name))
    return name


def db_of(cosmos: CosmosServer, db_name: str) -> Any:
    """The database on a client of its own, as another process would have."""
    return make_cosmos_client(cosmos.endpoint, cosmos.key).get_database_client(db_name)


@pytest.fixture
def log(cosmos: CosmosServer, db_name: str) -> CosmosEventLog:
    return CosmosEventLog(db_of(cosmos, db_name))


def tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def event(
    tenant: str, when: str, *, event_id: str | None = None, event_type: str = "AIaaS.Job.Succeeded", status: str = "ok"
) -> PlatformEvent:
    job = uuid.uuid4().hex[:12]
    return PlatformEvent(
        id=event_id or uuid.uuid4().hex,
        event_type=event_type,
        subject=f"/tenants/{tenant}/jobs/{job}",
        data={"jobId": job, "status": status, "model": {"name": "digits", "version": "1"}},
        event_time=when,
        topic=tenant,
    )


def all_pages(log: CosmosEventLog, tenant: str, *, limit: int, **filters: Any) -> tuple[list[PlatformEvent], int]:
    """Every event of the listing, page by page, and how many pages it took."""
    events, token, pages = [], None, 0
    while True:
        page, token = log.list_events(tenant, limit=limit, continuation=token, **filters)
        events += page
        pages += 1
        if token is None:
            return events, pages
        assert pages < 100, "the listing never ends"


def test_recording_an_event_again_keeps_one_entry_with_its_fields(log: CosmosEventLog) -> None:
    tenant = tenant_id()
    first = event(tenant, "2026-11-01T10:00:00.000Z")
    log.record([first])
    log.record([first])  # a publisher's retry

    listed, token = log.list_events(tenant)

    assert listed == [first]
    assert token is None
    assert log.get_events(tenant, [first.id, first.id]) == [first]


def test_the_container_keeps_events_35_days(cosmos: CosmosServer, db_name: str) -> None:
    props = db_of(cosmos, db_name).get_container_client(EVENTS_CONTAINER).read()
    assert props["defaultTtl"] == EVENTS_TTL_SECONDS == 35 * 24 * 3600
    assert props["partitionKey"]["paths"] == ["/tenantId"]


def test_the_listing_needs_the_containers_composite_index_as_in_azure(cosmos: CosmosServer) -> None:
    """Cosmos DB serves an ORDER BY on two properties only from a composite index; the stand-in refuses it too, so
    the index the container declares is the one the listing uses."""
    db = make_cosmos_client(cosmos.endpoint, cosmos.key).create_database_if_not_exists(f"evn{uuid.uuid4().hex[:8]}")
    without = {k: v for k, v in EVENTS_INDEXING.items() if k != "compositeIndexes"}
    db.create_container_if_not_exists(
        EVENTS_CONTAINER, partition_key=PartitionKey(path="/tenantId"), indexing_policy=without
    )
    log = CosmosEventLog(db)
    log.record([event("acme", "2026-11-01T10:00:00.000Z")])

    with pytest.raises(CosmosHttpResponseError) as refused:
        log.list_events("acme")
    assert refused.value.status_code == 400


def test_get_events_returns_only_the_tenants_own_ids(log: CosmosEventLog) -> None:
    mine, theirs = tenant_id(), tenant_id()
    a, b = event(mine, "2026-11-01T10:00:00.000Z"), event(mine, "2026-11-01T11:00:00.000Z")
    other = event(theirs, "2026-11-01T10:30:00.000Z")
    # The same id in two tenants: two entries, each tenant sees its own.
    same_id = event(theirs, "2026-11-01T12:00:00.000Z", event_id=a.id, status="theirs")
    log.record([a, b, other, same_id])

    found = log.get_events(mine, [a.id, other.id, "no-such-event", b.id])

    assert sorted(found, key=lambda e: e.id) == sorted([a, b], key=lambda e: e.id)
    assert log.get_events(theirs, [a.id]) == [same_id]
    assert log.get_events(mine, []) == []


def test_many_ids_are_read_back_whatever_their_number(log: CosmosEventLog) -> None:
    """A redelivery names thousands of ids: every one of the tenant's is found, none of anyone else's."""
    mine, theirs = tenant_id(), tenant_id()
    own = [event(mine, f"2026-11-01T10:{i:02d}:00.000Z") for i in range(30)]
    other = [event(theirs, "2026-11-01T10:00:00.000Z") for _ in range(10)]
    log.record(own + other)
    asked = [e.id for e in own] + [e.id for e in other] + [uuid.uuid4().hex for _ in range(10)]

    found = log.get_events(mine, asked)

    assert sorted(e.id for e in found) == sorted(e.id for e in own)
    assert {e.id: e for e in found} == {e.id: e for e in own}


def test_listing_is_newest_first_then_by_id_and_pages_through_everything(log: CosmosEventLog) -> None:
    tenant = tenant_id()
    # Seven events, three of them at one instant (told apart by id), recorded out of order.
    times = ["2026-11-02T08:00:00.000Z"] * 3 + [f"2026-11-0{d}T09:00:00.000Z" for d in (1, 3, 4, 5)]
    events = [event(tenant, when) for when in times]
    log.record(list(reversed(events)))
    log.record([event(tenant_id(), "2026-11-03T00:00:00.000Z")])  # another tenant's, never listed
    expected = sorted(events, key=lambda e: (e.event_time, e.id), reverse=True)

    one_page, token = log.list_events(tenant, limit=100)
    paged, pages = all_pages(log, tenant, limit=2)
    single, single_pages = all_pages(log, tenant, limit=1)

    assert one_page == expected and token is None
    assert paged == expected and pages == 4
    assert single == expected and single_pages == 7


def test_filters_since_inclusive_until_exclusive_and_type(log: CosmosEventLog) -> None:
    tenant = tenant_id()
    e1 = event(tenant, "2026-11-01T00:00:00.000Z")
    e2 = event(tenant, "2026-11-02T00:00:00.000Z", event_type="AIaaS.Job.Failed")
    e3 = event(tenant, "2026-11-03T00:00:00.000Z")
    e4 = event(tenant, "2026-11-04T00:00:00.000Z", event_type="AIaaS.Job.Failed")
    log.record([e1, e2, e3, e4])

    window, _ = log.list_events(tenant, since="2026-11-02T00:00:00.000Z", until="2026-11-04T00:00:00.000Z")
    failed, _ = log.list_events(tenant, event_type="AIaaS.Job.Failed")
    failed_since, pages = all_pages(
        log, tenant, limit=1, since="2026-11-02T00:00:00.000Z", event_type="AIaaS.Job.Failed"
    )

    assert window == [e3, e2]
    assert failed == [e4, e2]
    assert failed_since == [e4, e2] and pages == 2
    assert log.list_events(tenant, since="2026-12-01T00:00:00.000Z") == ([], None)


def test_a_page_boundary_inside_one_instant_neither_repeats_nor_skips(log: CosmosEventLog) -> None:
    tenant = tenant_id()
    same = [event(tenant, "2026-11-05T12:00:00.000Z") for _ in range(5)]
    log.record(same)
    log.record([event(tenant, "2026-11-05T11:00:00.000Z")])

    listed, pages = all_pages(log, tenant, limit=2)

    assert [e.id for e in listed[:5]] == sorted((e.id for e in same), reverse=True)
    assert len({e.id for e in listed}) == 6 and pages == 3


@pytest.mark.parametrize("token", ["null", "9999|", "2026-12-01T00:00:00Z|a b", "x" * 40])
def test_a_made_up_token_is_refused_not_read_as_a_time(log: CosmosEventLog, token: str) -> None:
    """A token the log did not hand out is a 400 (InvalidContinuationToken), never the first page again."""
    from shared.domain.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        log.list_events("acme", continuation=token)
    assert refused.value.code == "InvalidContinuationToken"
