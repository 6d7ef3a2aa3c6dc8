"""EventLog on Cosmos DB: the `events` container, partitioned by tenant, each event kept at least 30 days."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.cosmos import DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from shared.adapters.cosmos import _container, _params, newest_first_page, parse_keyset_token
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent

# The cursor list_events hands out: "<eventTime as utcnow() writes it>|<event ids shown at that instant>".
_ID = r"[A-Za-z0-9_-]{1,128}"
_CURSOR = re.compile(rf"^\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}(?:\.\d{{1,6}})?Z\|(?:{_ID}(?:,{_ID})*)?$")

logger = logging.getLogger(__name__)

EVENTS_CONTAINER = "events"
# The contract keeps a tenant's events at least 30 days (GET /api/v1/events, redelivery, replay); Event Grid itself
# keeps nothing after an event's time to live (24 h at most, Event Grid "Delivery and retry"). Cosmos DB deletes an
# item `defaultTtl` seconds after its last write (Cosmos DB "Time to live"): 35 days leaves 5 days of margin.
# The stand-in does not expire items (README limits table): nothing here relies on them going.
EVENTS_TTL_SECONDS = 35 * 24 * 3600
# Listed newest first by (eventTime, id) and filtered by type; the data is never queried, so only these paths are
# indexed. Cosmos DB serves an ORDER BY on two properties only from a composite index of the same paths and
# directions (Cosmos DB "Indexing policies"); the stand-in refuses the query without it, as Cosmos DB does.
EVENTS_INDEXING = {
    "indexingMode": "consistent",
    "includedPaths": [
        {"path": "/tenantId/?"},
        {"path": "/eventTime/?"},
        {"path": "/eventType/?"},
        {"path": "/id/?"},
    ],
    "excludedPaths": [{"path": "/*"}, {"path": '/"_etag"/?'}],
    "compositeIndexes": [
        [{"path": "/eventTime", "order": "descending"}, {"path": "/id", "order": "descending"}],
    ],
}
# get_events reads one by one up to this many ids, then READ_WORKERS at a time (the SDK client is thread-safe): in
# Azure a point read is a network round trip of milliseconds, so 10,000 of them in a row would take most of a minute.
# (The single-threaded stand-in gains nothing from it: 1,000 reads took 1.4 s either way.)
PARALLEL_READS_FROM, READ_WORKERS = 8, 8
# An event is a few KB (a job's ids, counts and links), far below Cosmos DB's 2 MB item limit (Cosmos DB service
# quotas; enforced by shared/localhost/cosmos_server.js), so an event is always one document.


def ensure_events_container(db: DatabaseProxy) -> None:
    """The `events` container (partition /tenantId, defaultTtl 35 days), as the deployment declares it in Azure."""
    db.create_container_if_not_exists(
        EVENTS_CONTAINER,
        partition_key=PartitionKey(path="/tenantId"),
        indexing_policy=EVENTS_INDEXING,
        default_ttl=EVENTS_TTL_SECONDS,
    )


def _doc(event: PlatformEvent) -> dict[str, Any]:
    return {**event.to_eventgrid(), "tenantId": event.topic}


def _event(doc: dict[str, Any]) -> PlatformEvent:
    return PlatformEvent.from_eventgrid(doc)


class CosmosEventLog:
    """Every published event, one document per (tenant, event id); recording again is an upsert."""

    def __init__(self, database: DatabaseProxy) -> None:
        self._c = _container(database, EVENTS_CONTAINER)

    def record(self, events: Sequence[PlatformEvent]) -> None:
        for event in events:
            self._c.upsert_item(_doc(event), no_response=True)

    def get_events(self, tenant_id: str, event_ids: Sequence[str]) -> list[PlatformEvent]:
        """Point reads in the tenant's partition: another tenant's id is simply not found there."""
        ids = [i for i in dict.fromkeys(event_ids) if i and isinstance(i, str)]

        def read(event_id: str) -> PlatformEvent | None:
            try:
                return _event(self._c.read_item(event_id, partition_key=tenant_id))
            except CosmosResourceNotFoundError:
                return None

        if len(ids) <= PARALLEL_READS_FROM:
            found = [read(i) for i in ids]
        else:
            # A redelivery names up to 10,000 ids: point reads (1 RU each) side by side, not one round trip at a time.
            with ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="event-reads") as pool:
                found = list(pool.map(read, ids))
        return [event for event in found if event is not None]

    def list_events(
        self,
        tenant_id: str,
        *,
        since: str | None = None,
        until: str | None = None,
        event_type: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[PlatformEvent], str | None]:
        """Keyset paging on eventTime (newest first, then id); `continuation` is "<eventTime>|<ids seen at it>"."""
        limit = max(1, limit)
        if continuation and not _CURSOR.fullmatch(continuation):
            # Else a made-up token compares as a time (`"null"` sorts after every date) and lists page one again.
            raise InvalidInput("continuationToken is not valid", code="InvalidContinuationToken")
        before, seen = parse_keyset_token(continuation)
        where = ["c.tenantId = @tenantId"]
        values: dict[str, str] = {"tenantId": tenant_id}
        for clause, name, value in (
            ("c.eventTime <= @before", "before", before),
            ("c.eventTime >= @since", "since", since),
            ("c.eventTime < @until", "until", until),
            ("c.eventType = @eventType", "eventType", event_type),
        ):
            if value:
                where.append(clause)
                values[name] = value
        query = f"SELECT * FROM c WHERE {' AND '.join(where)} ORDER BY c.eventTime DESC, c.id DESC"
        docs = self._c.query_items(
            query, parameters=_params(**values), partition_key=tenant_id, max_item_count=limit + 1
        )
        page, token = newest_first_page(docs, "eventTime", limit=limit, before=before, seen=seen)
        return [_event(doc) for doc in page], token
