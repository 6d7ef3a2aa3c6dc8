"""Event Grid's delivery rules (retry schedule, what is retried, dead-letter records and their blob layout)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.domain.events import PlatformEvent

# Event Grid's retry schedule (Event Grid "Delivery and retry"): 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h,
# 6 h, then every 12 h, until maxDeliveryAttempts or the event's time to live runs out.
RETRY_SCHEDULE_SECONDS = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)
RETRY_EVERY_SECONDS_AFTER = 12 * 3600
# Event Grid waits 30 s for an answer to a delivery, then counts it as timed out and retries.
DELIVERY_TIMEOUT_SECONDS = 30.0
# retryPolicy bounds (Event Grid: maxDeliveryAttempts 1-30, default 30; eventTimeToLiveInMinutes 1-1440, default 1440).
MAX_DELIVERY_ATTEMPTS, DEFAULT_DELIVERY_ATTEMPTS = 30, 30
MAX_EVENT_TTL_MINUTES, DEFAULT_EVENT_TTL_MINUTES = 1440, 1440
# Answers Event Grid never retries: the event goes to the dead letters at once (contract "Event delivery").
NO_RETRY_STATUSES = frozenset({400, 401, 403, 413})
# Event Grid counts only these as delivered; anything else (a 3xx included: redirects are not followed) failed.
SUCCESS_STATUSES = frozenset({200, 201, 202, 203, 204})

# deadLetterReason values.
MAX_ATTEMPTS_EXCEEDED = "MaxDeliveryAttemptsExceeded"
TTL_EXCEEDED = "TimeToLiveExceeded"
CLIENT_ERROR = "UndeliverableDueToClientError"
DEAD_LETTER_REASONS = (MAX_ATTEMPTS_EXCEEDED, TTL_EXCEEDED, CLIENT_ERROR)

# The static header that carries a subscription's secret on every delivery (an Event Grid delivery attribute mapping
# with isSecret in Azure), and the one that proves a delivery to the platform's relay came from the platform's own
# Event Grid subscription (a per-subscription HMAC of the relay key).
SECRET_HEADER = "aiaas-delivery-secret"
RELAY_HEADER = "aiaas-relay-key"


def retry_delay(attempts_made: int) -> float:
    """Seconds between the `attempts_made`-th failed attempt and the next one (unscaled)."""
    if attempts_made < 1:
        return 0.0
    if attempts_made <= len(RETRY_SCHEDULE_SECONDS):
        return float(RETRY_SCHEDULE_SECONDS[attempts_made - 1])
    return float(RETRY_EVERY_SECONDS_AFTER)


def is_delivered(status: int | None) -> bool:
    return status in SUCCESS_STATUSES


def is_retried(status: int | None) -> bool:
    """A failed attempt is retried unless the endpoint answered one of the client errors Event Grid gives up on.
    `None` (no answer: a timeout or a connection error) is retried."""
    return status not in NO_RETRY_STATUSES


def delivery_outcome(status: int | None, *, timed_out: bool = False) -> str:
    """lastDeliveryOutcome as Event Grid words it."""
    if timed_out:
        return "TimedOut"
    if status is None:
        return "GenericError"
    if status in SUCCESS_STATUSES:
        return "Succeeded"
    return {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        408: "TimedOut",
        413: "RequestEntityTooLarge",
        429: "Busy",
        503: "Busy",
    }.get(status, "GenericError")


def eventgrid_subscription_name(subscription_id: str) -> str:
    """The Event Grid event subscription's name for a platform subscription (3-64 of [A-Za-z0-9-]): its id, which
    is unique across tenants, so a dead letter's blob path names exactly one platform subscription."""
    return f"aiaas-{subscription_id}"


def redelivery_topic(tenant_id: str, subscription_id: str) -> str:
    """The domain topic that reaches one subscription only (redelivery and replay in Azure): Event Grid cannot
    address one subscription of a topic, so each subscription has a twin on a topic of its own."""
    digest = hashlib.sha256(f"{tenant_id}/{subscription_id}".encode()).hexdigest()[:40]
    return f"redeliver-{digest}"


def relay_key(master_key: str, tenant_id: str, subscription_id: str) -> str:
    """The static header value a relay delivery carries: derived per subscription, so the relay needs no lookup to
    tell a genuine delivery, and one subscription's value opens no other."""
    return hmac.new(master_key.encode(), f"relay:{tenant_id}/{subscription_id}".encode(), hashlib.sha256).hexdigest()


def dead_letter_blob_path(subscription_name: str, when: datetime, name: str) -> str:
    """Where Event Grid writes a dead letter in the dead-letter container: the subscription's name upper-cased,
    then the UTC date and hour without zero padding (Event Grid "Set dead-letter location"), then `<guid>.json`."""
    return f"{subscription_name.upper()}/{when.year}/{when.month}/{when.day}/{when.hour}/{name}.json"


def dead_letter_prefixes(subscription_name: str, *, domain: str | None = None, topic: str | None = None) -> list[str]:
    """The prefixes a subscription's dead letters may sit under: the documented one, and the same under the domain
    and domain topic names, which Event Grid puts in front for domain topic subscriptions."""
    name = subscription_name.upper() + "/"
    prefixes = [name]
    if domain:
        prefixes.append(f"{domain.upper()}/{name}")
        if topic:
            prefixes.append(f"{domain.upper()}/{topic.upper()}/{name}")
    return prefixes


@dataclass(frozen=True)
class DeadLetter:
    """An event that could not be delivered, with why (Event Grid's dead-letter record)."""

    event: PlatformEvent
    reason: str
    delivery_attempts: int
    last_outcome: str
    last_http_status: int | None
    last_attempt_time: str
    publish_time: str = ""

    def to_blob_item(self) -> dict[str, Any]:
        """One element of a dead-letter blob (a JSON array): the event as published, with the delivery metadata
        next to its own fields, as Event Grid writes it."""
        return {
            **self.event.to_eventgrid(),
            "deadLetterReason": self.reason,
            "deliveryAttempts": self.delivery_attempts,
            "lastDeliveryOutcome": self.last_outcome,
            "lastHttpStatusCode": self.last_http_status,
            "lastDeliveryAttemptTime": self.last_attempt_time,
            "publishTime": self.publish_time,
        }

    @classmethod
    def from_blob_item(cls, raw: dict[str, Any]) -> DeadLetter:
        """Reads an element in the Event Grid schema, or a CloudEvent with the same metadata (CloudEvents delivery)."""
        if "specversion" in raw:
            event = PlatformEvent.from_cloudevent(raw, topic=str(raw.get("source", "")).rsplit("/", 1)[-1])
        else:
            event = PlatformEvent.from_eventgrid(raw)
        status = raw.get("lastHttpStatusCode")
        return cls(
            event=event,
            reason=str(raw.get("deadLetterReason", "")),
            delivery_attempts=int(raw.get("deliveryAttempts") or 0),
            last_outcome=str(raw.get("lastDeliveryOutcome", "")),
            last_http_status=int(status) if status not in (None, "", 0) else None,
            last_attempt_time=str(raw.get("lastDeliveryAttemptTime", "")),
            publish_time=str(raw.get("publishTime", "")),
        )

    def view(self) -> dict[str, Any]:
        """The API's item (contract: GET /api/v1/subscriptions/{id}/deadletters)."""
        return {
            "event": self.event.to_eventgrid(),
            "deadLetterReason": self.reason,
            "deliveryAttempts": self.delivery_attempts,
            "lastDeliveryOutcome": self.last_outcome,
            "lastHttpStatusCode": self.last_http_status,
            "lastDeliveryAttemptTime": self.last_attempt_time,
        }


def relay_url(api_url: str, tenant_id: str, subscription_id: str) -> str:
    """Where Event Grid delivers a callback subscription's events: the platform's relay (shared.services.relay)."""
    return f"{api_url.rstrip('/')}/relay/{tenant_id}/{subscription_id}"
