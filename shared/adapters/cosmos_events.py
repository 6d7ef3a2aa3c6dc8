"""EventLog on Cosmos DB: the `events` container, partitioned by tenant, each event kept at least 30 days."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.domain.events import PlatformEvent


class CosmosEventLog:
    """Skeleton: filled in by the event API work."""

    def __init__(self, database: Any) -> None:
        self._db = database

    def record(self, events: Sequence[PlatformEvent]) -> None:
        raise NotImplementedError

    def get_events(self, tenant_id: str, event_ids: Sequence[str]) -> list[PlatformEvent]:
        raise NotImplementedError

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
        raise NotImplementedError
