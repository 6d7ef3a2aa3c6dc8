"""EventRouting locally: the local broker reads subscriptions from the store; secrets and redeliveries go to it."""

from __future__ import annotations

from collections.abc import Sequence

from shared.domain.events import PlatformEvent, Subscription
from shared.ports import SecretStore


class LocalBrokerRouting:
    """`broker_url` is the broker's base (AIAAS_EVENTGRID_ENDPOINT without `/api/events`), `key` its aeg-sas-key
    (skeleton: filled in with the broker)."""

    def __init__(self, broker_url: str, key: str, secrets: SecretStore | None) -> None:
        self._broker_url = broker_url
        self._key = key
        self._secrets = secrets

    def create_route(self, subscription: Subscription, *, secret: str | None = None) -> None:
        raise NotImplementedError

    def delete_route(self, subscription: Subscription) -> None:
        raise NotImplementedError

    def redeliver(self, subscription: Subscription, events: Sequence[PlatformEvent]) -> None:
        raise NotImplementedError
