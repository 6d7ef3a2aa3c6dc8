"""EventRouting on Azure: tenant subscriptions as Event Grid event subscriptions on the tenant's domain topic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.domain.events import PlatformEvent, Subscription


class EventGridRouting:
    """Creates, deletes and redelivers through azure-mgmt-eventgrid with the function app's identity (skeleton:
    filled in by the Event Grid management work)."""

    def __init__(
        self,
        domain_id: str,
        credential: Any,
        *,
        publish_endpoint: str,
        deadletter_account_id: str,
        deadletter_container: str,
        api_url: str,
        relay_key: str,
        client: Any = None,
        publisher: Any = None,
    ) -> None:
        self._domain_id = domain_id

    def create_route(self, subscription: Subscription, *, secret: str | None = None) -> None:
        raise NotImplementedError

    def delete_route(self, subscription: Subscription) -> None:
        raise NotImplementedError

    def redeliver(self, subscription: Subscription, events: Sequence[PlatformEvent]) -> None:
        raise NotImplementedError
