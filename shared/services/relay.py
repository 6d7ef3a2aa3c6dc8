"""The relay of callback subscriptions: Event Grid delivers to the platform, which posts each event to the tenant's
callback URL (a Logic Apps callback cannot answer Event Grid's handshake) and mirrors the outcome back."""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.domain.delivery import NO_RETRY_STATUSES, RELAY_HEADER, relay_key
from shared.domain.errors import InvalidInput, NotFound, Unauthorized
from shared.domain.events import PlatformEvent, Subscription
from shared.services.platform import Platform
from shared.services.subscriptions import callback_host_allowed

logger = logging.getLogger(__name__)
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
# Event Grid waits 30 s for the relay's answer: the relay gives the callback 25 s of it, and answers in time.
RELAY_TIMEOUT_SECONDS = 25.0
# Event Grid's largest event is 1 MB (Event Grid quotas); a delivery of one event is not much more.
MAX_RELAY_BODY_BYTES = 1024 * 1024 + 64 * 1024
MAX_VALIDATION_CODE_CHARS = 512
# Event Grid's delivery headers, passed on to the callback as they came (never the relay key).
FORWARDED_HEADERS = ("aeg-event-type", "aeg-delivery-count", "aeg-subscription-name", "aeg-metadata-version")
CLOUDEVENTS = "CloudEventSchemaV1_0"


@dataclass(frozen=True)
class RelayAnswer:
    """What the relay answers Event Grid (or the local broker): the status decides retry or dead letter."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def validation_answer(event_type_header: str | None, body: bytes) -> RelayAnswer | None:
    """Event Grid's subscription validation handshake, answered by the relay itself ({"validationResponse"}), or
    None when `body` is no validation request.

    Answered without the relay key: Event Grid does not document that its delivery attributes go with the
    validation request, and the echo reads nothing and opens nothing (every delivery still needs the key)."""
    if (event_type_header or "").lower() not in ("subscriptionvalidation", ""):
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    first = parsed[0] if isinstance(parsed, list) and len(parsed) == 1 else parsed
    if not isinstance(first, dict) or first.get("eventType") != VALIDATION_EVENT:
        return None
    code = (first.get("data") or {}).get("validationCode") if isinstance(first.get("data"), dict) else None
    if not isinstance(code, str) or not 0 < len(code) <= MAX_VALIDATION_CODE_CHARS:
        return RelayAnswer(400, _error("InvalidValidationEvent", "validationCode missing or too long"))
    return RelayAnswer(200, {"validationResponse": code})


def abuse_protection_answer(origin: str | None) -> RelayAnswer:
    """The CloudEvents webhook abuse-protection request (OPTIONS with WebHook-Request-Origin): allowed."""
    if not origin:
        return RelayAnswer(400, _error("InvalidRequest", "WebHook-Request-Origin is required"))
    return RelayAnswer(200, None, {"WebHook-Allowed-Origin": origin[:256], "WebHook-Allowed-Rate": "*"})


def check_relay_key(master_key: str, tenant_id: str, subscription_id: str, presented: str | None) -> None:
    """Unauthorized unless `presented` is this subscription's relay header value (constant-time compare)."""
    if not master_key or not presented:
        raise Unauthorized(f"relay call without {RELAY_HEADER}")
    expected = relay_key(master_key, tenant_id, subscription_id)
    if not hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace")):
        raise Unauthorized(f"relay call with a wrong {RELAY_HEADER}")


def relay_delivery(
    platform: Platform,
    tenant_id: str,
    subscription_id: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_loopback: bool = False,
    timeout_seconds: float = RELAY_TIMEOUT_SECONDS,
) -> RelayAnswer:
    """Posts each event of an authenticated delivery (Event Grid schema: an array; CloudEvents: one object or a
    batch) to the subscription's callback URL, one JSON object per POST, and mirrors the outcome: 2xx -> 200;
    400/401/403/413 -> the same (Event Grid dead-letters at once); anything else, a timeout or a connection error
    -> 502/503/504 (Event Grid retries). `headers` are the delivery's, names lower case."""
    events = _parse_events(body)
    try:
        subscription = platform.subscriptions.get_subscription(tenant_id, subscription_id)
    except NotFound:
        # Deleted since Event Grid queued the delivery: "DELETE stops its deliveries at once".
        logger.info(
            "relay: subscription %s is gone, %d events dropped",
            subscription_id,
            len(events),
            extra={"tenant_id": tenant_id},
        )
        return RelayAnswer(200, {"delivered": 0, "dropped": len(events)})
    if subscription.kind != "callback":
        logger.warning(
            "relay: subscription %s is a %s, not a callback",
            subscription_id,
            subscription.kind,
            extra={"tenant_id": tenant_id},
        )
        return RelayAnswer(403, _error("NotACallback", "the subscription is not a callback subscription"))
    if not callback_host_allowed(urlsplit(subscription.endpoint_url).hostname or "", platform.callback_hosts):
        logger.warning(
            "relay: the callback host of %s is not on the allow-list", subscription_id, extra={"tenant_id": tenant_id}
        )
        return RelayAnswer(403, _error("CallbackNotAllowed", "the callback host is not allowed"))
    forwarded = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
    deadline = time.monotonic() + timeout_seconds
    for raw in events:
        event_body, content_type = _rendered(raw, subscription)
        sent = {**forwarded, "content-type": content_type}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return RelayAnswer(504, _error("CallbackTimedOut", "the callback did not answer in time"))
        answer = _post(platform, subscription, event_body, sent, allow_loopback=allow_loopback, seconds=remaining)
        if answer is not None:
            return answer
    return RelayAnswer(200, {"delivered": len(events)})


def _post(
    platform: Platform,
    subscription: Subscription,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_loopback: bool,
    seconds: float,
) -> RelayAnswer | None:
    """None when the callback took the event; else the relay's answer for what happened."""
    extra = {"tenant_id": subscription.tenant_id}
    sub_id = subscription.subscription_id
    try:
        status = platform.validator.deliver_callback(
            subscription.endpoint_url, body, headers, allow_loopback=allow_loopback, timeout_seconds=seconds
        )
    except InvalidInput as err:  # the egress policy refuses the callback's host now: a client error, dead-lettered
        logger.warning("relay: callback of %s refused by the egress policy: %s", sub_id, err.message, extra=extra)
        return RelayAnswer(403, _error("CallbackNotAllowed", "the callback host is not allowed"))
    except TimeoutError as err:
        logger.info("relay: callback of %s timed out: %s", sub_id, err, extra=extra)
        return RelayAnswer(504, _error("CallbackTimedOut", "the callback did not answer in time"))
    except ConnectionError as err:
        logger.info("relay: callback of %s unreachable: %s", sub_id, err, extra=extra)
        return RelayAnswer(502, _error("CallbackUnreachable", "the callback could not be reached"))
    if 200 <= status < 300:
        return None
    logger.info("relay: callback of %s answered %d", sub_id, status, extra=extra)
    if status in NO_RETRY_STATUSES:
        return RelayAnswer(status, _error("CallbackRefused", f"the callback answered {status}"))
    mirrored = 503 if status in (429, 503) else 502
    return RelayAnswer(mirrored, _error("CallbackFailed", f"the callback answered {status}"))


def _parse_events(body: bytes) -> list[dict[str, Any]]:
    """The delivery's events as they came: an Event Grid array, a CloudEvent, or a CloudEvents batch."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise InvalidInput("the delivery is not JSON", code="InvalidDelivery") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items or not all(_is_event(item) for item in items):
        raise InvalidInput("the delivery holds no events", code="InvalidDelivery")
    return items


def _is_event(item: Any) -> bool:
    """An Event Grid event or a CloudEvent, with what the relay reads of it."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return False
    kind = item.get("type") if "specversion" in item else item.get("eventType")
    return isinstance(kind, str) and isinstance(item.get("data", {}), dict | None)


def _rendered(raw: dict[str, Any], subscription: Subscription) -> tuple[bytes, str]:
    """One event in the subscription's schema: passed through as it came when it already is, converted if not."""
    is_cloudevent = "specversion" in raw
    if subscription.schema == CLOUDEVENTS:
        event = (
            raw
            if is_cloudevent
            else PlatformEvent.from_eventgrid(raw).to_cloudevent(f"/tenants/{subscription.tenant_id}")
        )
        return json.dumps(event).encode(), "application/cloudevents+json; charset=utf-8"
    event = PlatformEvent.from_cloudevent(raw, topic=subscription.tenant_id).to_eventgrid() if is_cloudevent else raw
    return json.dumps(event).encode(), "application/json"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
