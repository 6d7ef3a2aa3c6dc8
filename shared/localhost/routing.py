"""EventRouting locally: the local broker reads subscriptions from the store; secrets and redeliveries go to it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
import orjson

from shared.domain.events import PlatformEvent, Subscription
from shared.ports import SecretStore

logger = logging.getLogger(__name__)
# The broker is in the same local host (loopback): it answers at once, so a short bound is plenty.
REDELIVER_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
# Requests stay well under the broker's body limit (shared.localhost.broker.MAX_REQUEST_BYTES, 1 MB).
REDELIVER_BATCH_BYTES = 512 * 1024


def secret_name(subscription_id: str) -> str:
    """The SecretStore name of a subscription's delivery secret (the broker reads it there)."""
    return f"subscription-{subscription_id}"


class LocalBrokerRouting:
    """`broker_url` is the broker's base (AIAAS_EVENTGRID_ENDPOINT without `/api/events`), `key` its aeg-sas-key.

    The broker needs no route of its own: it reads the subscription from the store before every attempt, so the
    row's deletion (the service deletes it right after delete_route) is what stops pending deliveries."""

    def __init__(self, broker_url: str, key: str, secrets: SecretStore | None) -> None:
        self._broker_url = broker_url.rstrip("/")
        self._key = key
        self._secrets = secrets

    def create_route(self, subscription: Subscription, *, secret: str | None = None) -> None:
        """Keeps the delivery secret where the broker reads it (or removes an old one when there is none now)."""
        name = secret_name(subscription.subscription_id)
        if secret is None:
            if self._secrets is not None:
                self._secrets.delete(subscription.tenant_id, name)
            return
        if self._secrets is None:
            raise RuntimeError("no secret store is configured: a subscription secret cannot be kept")
        self._secrets.put(subscription.tenant_id, name, secret)

    def delete_route(self, subscription: Subscription) -> None:
        if self._secrets is not None:
            self._secrets.delete(subscription.tenant_id, secret_name(subscription.subscription_id))

    def redeliver(self, subscription: Subscription, events: Sequence[PlatformEvent]) -> None:
        """Asks the broker to deliver these events (their original ids) to this one subscription, in requests
        under the broker's body limit."""
        batch: list[dict[str, object]] = []
        size = 0
        for event in events:
            item = event.to_eventgrid()
            item_size = len(orjson.dumps(item))
            if batch and size + item_size > REDELIVER_BATCH_BYTES:
                self._post(subscription, batch)
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            self._post(subscription, batch)
        logger.info(
            "%d events scheduled again to subscription %s",
            len(events),
            subscription.subscription_id,
            extra={"tenant_id": subscription.tenant_id},
        )

    def _post(self, subscription: Subscription, events: list[dict[str, object]]) -> None:
        answer = httpx.post(
            f"{self._broker_url}/redeliver",
            content=orjson.dumps(
                {"tenantId": subscription.tenant_id, "subscriptionId": subscription.subscription_id, "events": events}
            ),
            headers={"aeg-sas-key": self._key, "content-type": "application/json"},
            timeout=REDELIVER_TIMEOUT,
            follow_redirects=False,
            trust_env=False,
        )
        answer.raise_for_status()
