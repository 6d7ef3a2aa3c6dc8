"""Event subscriptions: webhooks (after the validation handshake) and callbacks (through the relay), routed to
deliveries by the EventRouting port, with their dead letters, redelivery and the tenant's event log."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shared.domain.delivery import MAX_DELIVERY_ATTEMPTS, MAX_EVENT_TTL_MINUTES
from shared.domain.egress import endpoint_validation_failed, is_loopback_name, parse_host_literal
from shared.domain.errors import InvalidInput, ServiceUnavailable
from shared.domain.events import (
    DEFAULT_CALLBACK_EVENT_TYPES,
    DEFAULT_SUBSCRIPTION_EVENT_TYPES,
    SCHEMAS,
    PlatformEvent,
    Subscription,
)
from shared.domain.models import MODEL_NAME_PATTERN
from shared.services.platform import Platform

logger = logging.getLogger(__name__)
MAX_SUBSCRIPTIONS_PER_TENANT = 25
MAX_ENDPOINT_URL_CHARS = 2048
MAX_MODEL_NAMES = 25
MIN_SECRET_CHARS, MAX_SECRET_CHARS = 16, 256
# One redelivery call schedules at most this many events (by id or by window): a bigger window is refused, never cut.
MAX_REDELIVERY_EVENTS = 10_000
EVENT_PAGE = 1000
# Redelivery by id looks for ids the event log no longer has (kept 35 days) in this many of the dead letters.
DEAD_LETTER_PAGE, MAX_DEAD_LETTERS_SCANNED = 500, 50_000


def create_subscription(
    platform: Platform,
    tenant_id: str,
    endpoint_url: str | None = None,
    *,
    callback_url: str | None = None,
    schema: str = "EventGridSchema",
    event_types: list[str] | None = None,
    model_names: list[str] | None = None,
    max_delivery_attempts: int | None = None,
    event_ttl_minutes: int | None = None,
    secret: str | None = None,
    allow_loopback_http: bool = False,
) -> Subscription:
    """Validates, stores and routes a subscription: `endpoint_url` (a webhook, which must pass the validation
    handshake) or `callback_url` (a Logic Apps style callback: no handshake, delivered through the relay).

    `allow_loopback_http` (AIAAS_ALLOW_LOOPBACK_ENDPOINTS, development only) lets the URL be on loopback, over http
    too; every other URL is https on a public address. Whatever is wrong with the URL (not https, a refused address,
    a closed port, a TLS error, a wrong answer, a host off the callback allow-list) the caller gets the same
    EndpointValidationFailed: the platform must not scan its own network for the tenant.
    """
    if (endpoint_url is None) == (callback_url is None):
        raise InvalidInput(
            "give exactly one of endpointUrl (a webhook) and callbackUrl (a callback)", code="InvalidRequest"
        )
    kind = "webhook" if endpoint_url is not None else "callback"
    url = endpoint_url if endpoint_url is not None else callback_url
    assert url is not None
    if kind == "callback" and secret is not None:
        raise InvalidInput(
            "secret is for webhooks only (a callback URL carries its own signature)", code="InvalidSecret"
        )
    if secret is not None and not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise InvalidInput(f"secret must have {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} characters", code="InvalidSecret")
    _check_endpoint(url, allow_loopback_http=allow_loopback_http)
    if schema not in SCHEMAS:
        raise InvalidInput(f"schema must be one of {', '.join(SCHEMAS)}", code="InvalidSchema")
    defaults = DEFAULT_SUBSCRIPTION_EVENT_TYPES if kind == "webhook" else DEFAULT_CALLBACK_EVENT_TYPES
    types = list(event_types) if event_types else list(defaults)
    unknown = [t for t in types if not t.startswith("AIaaS.")]
    if unknown or len(set(types)) != len(types):
        raise InvalidInput(f"unknown or repeated event types: {unknown or types}", code="InvalidEventTypes")
    names = _model_names(model_names)
    attempts = _bounded("maxDeliveryAttempts", max_delivery_attempts, MAX_DELIVERY_ATTEMPTS)
    ttl = _bounded("eventTimeToLiveInMinutes", event_ttl_minutes, MAX_EVENT_TTL_MINUTES)
    if len(platform.subscriptions.list_subscriptions(tenant_id)) >= MAX_SUBSCRIPTIONS_PER_TENANT:
        raise InvalidInput(
            f"at most {MAX_SUBSCRIPTIONS_PER_TENANT} subscriptions per tenant", code="TooManySubscriptions"
        )
    try:
        if kind == "webhook":
            platform.validator.validate(url, schema, allow_loopback=allow_loopback_http)
        else:
            if not callback_host_allowed(urlsplit(url).hostname or "", platform.callback_hosts):
                raise InvalidInput("the callback host is not on the allow-list (AIAAS_CALLBACK_HOSTS)")
            platform.validator.check_callback(url, allow_loopback=allow_loopback_http)
    except InvalidInput as err:
        logger.info("%s validation failed: %s", kind, err.message, extra={"tenant_id": tenant_id})
        raise endpoint_validation_failed() from None
    subscription = Subscription(
        tenant_id=tenant_id,
        subscription_id=uuid.uuid4().hex,
        endpoint_url=url,
        schema=schema,
        event_types=types,
        kind=kind,
        model_names=names,
        max_delivery_attempts=attempts,
        event_ttl_minutes=ttl,
        has_secret=secret is not None,
    )
    platform.subscriptions.put_subscription(subscription)
    try:
        platform.routing.create_route(subscription, secret=secret)
    except Exception as err:
        # Never a half-made subscription: a row without a route would list as active and deliver nothing.
        logger.warning(
            "routing subscription %s failed, rolled back: %s: %s",
            subscription.subscription_id,
            type(err).__name__,
            err,
            extra={"tenant_id": tenant_id},
        )
        platform.subscriptions.delete_subscription(tenant_id, subscription.subscription_id)
        raise ServiceUnavailable("event delivery could not be set up for the subscription; try again") from err
    logger.info("%s subscription %s created", kind, subscription.subscription_id, extra={"tenant_id": tenant_id})
    return subscription


def delete_subscription(platform: Platform, tenant_id: str, subscription_id: str) -> None:
    """Stops its deliveries (pending retries too), then removes the row; NotFound for another tenant's id."""
    subscription = platform.subscriptions.get_subscription(tenant_id, subscription_id)
    platform.routing.delete_route(subscription)
    platform.subscriptions.delete_subscription(tenant_id, subscription_id)
    logger.info("subscription %s deleted", subscription_id, extra={"tenant_id": tenant_id})


def callback_host_allowed(host: str, allowed: tuple[str, ...] | list[str]) -> bool:
    """Whether a callback URL's host is on the allow-list: an entry is a host (exact) or a ".suffix" (any host
    under it, not the bare suffix). An empty list allows any host (the egress policy still applies)."""
    if not allowed:
        return True
    name = host.lower().rstrip(".")
    if not name:
        return False
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("."):
            if name.endswith(entry) and len(name) > len(entry):
                return True
        elif name == entry:
            return True
    return False


def list_dead_letters(
    platform: Platform, tenant_id: str, subscription_id: str, *, limit: int = 100, continuation: str | None = None
) -> dict[str, Any]:
    """`{"items": [DeadLetter.view()], "continuationToken"}`, oldest first."""
    subscription = platform.subscriptions.get_subscription(tenant_id, subscription_id)
    letters, token = platform.dead_letters.list_dead_letters(subscription, limit=limit, continuation=continuation)
    return {"items": [letter.view() for letter in letters], "continuationToken": token}


def redeliver(
    platform: Platform,
    tenant_id: str,
    subscription_id: str,
    *,
    event_ids: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Delivers again, with their original ids, the tenant's events of `event_ids` or of the window [since, until)
    from the event log, those the subscription's filters let through; `{"subscriptionId", "events", "notFound"}`."""
    subscription = platform.subscriptions.get_subscription(tenant_id, subscription_id)
    if (event_ids is None) == (since is None):
        raise InvalidInput("give eventIds, or since (and optionally until), not both", code="InvalidRequest")
    if until is not None and since is None:
        raise InvalidInput("until needs since", code="InvalidRequest")
    not_found: list[str] = []
    if event_ids is not None:
        wanted = list(dict.fromkeys(event_ids))
        if not wanted or len(wanted) > MAX_REDELIVERY_EVENTS:
            raise InvalidInput(f"eventIds takes 1-{MAX_REDELIVERY_EVENTS} ids", code="TooManyEvents")
        found = {e.id: e for e in platform.event_log.get_events(tenant_id, wanted)}
        if len(found) < len(wanted):  # older than the event log keeps: the dead letters may still hold them
            found.update(_dead_lettered(platform, subscription, {i for i in wanted if i not in found}))
        not_found = [i for i in wanted if i not in found]
        events = [found[i] for i in wanted if i in found]
    else:
        start = parse_time("since", since)
        end = parse_time("until", until) if until is not None else None
        if end is not None and start is not None and end <= start:
            raise InvalidInput("until must be later than since", code="InvalidTime")
        events = _window(platform, tenant_id, start, end)
    chosen = [e for e in events if subscription.matches(e)]
    if chosen:
        platform.routing.redeliver(subscription, chosen)
    logger.info(
        "redelivering %d events to subscription %s (%d not found)",
        len(chosen),
        subscription_id,
        len(not_found),
        extra={"tenant_id": tenant_id},
    )
    return {"subscriptionId": subscription_id, "events": len(chosen), "notFound": not_found}


def _dead_lettered(platform: Platform, subscription: Subscription, ids: set[str]) -> dict[str, PlatformEvent]:
    """The events of `ids` among the subscription's dead letters (at most MAX_DEAD_LETTERS_SCANNED read)."""
    found: dict[str, PlatformEvent] = {}
    token: str | None = None
    for _ in range(MAX_DEAD_LETTERS_SCANNED // DEAD_LETTER_PAGE):
        letters, token = platform.dead_letters.list_dead_letters(
            subscription, limit=DEAD_LETTER_PAGE, continuation=token
        )
        for letter in letters:
            if letter.event.id in ids and letter.event.topic == subscription.tenant_id:
                found[letter.event.id] = letter.event
        if token is None or len(found) == len(ids):
            break
    return found


def _window(platform: Platform, tenant_id: str, since: str | None, until: str | None) -> list[PlatformEvent]:
    """Every event of the window, oldest first (as they were published); too many is refused, never cut."""
    events: list[PlatformEvent] = []
    token: str | None = None
    while True:
        page, token = platform.event_log.list_events(
            tenant_id, since=since, until=until, limit=EVENT_PAGE, continuation=token
        )
        events.extend(page)
        if len(events) > MAX_REDELIVERY_EVENTS:
            raise InvalidInput(
                f"the window holds more than {MAX_REDELIVERY_EVENTS} events: redeliver a shorter one",
                code="TooManyEvents",
            )
        if token is None or not page:
            break
    events.reverse()
    return events


def list_events(
    platform: Platform,
    tenant_id: str,
    *,
    since: str | None = None,
    until: str | None = None,
    event_type: str | None = None,
    limit: int = 100,
    continuation: str | None = None,
) -> dict[str, Any]:
    """`{"items": [Event Grid events], "continuationToken"}`, newest first."""
    start = parse_time("since", since) if since else None
    end = parse_time("until", until) if until else None
    events, token = platform.event_log.list_events(
        tenant_id, since=start, until=end, event_type=event_type or None, limit=limit, continuation=continuation
    )
    return {"items": [event.to_eventgrid() for event in events], "continuationToken": token}


def parse_time(name: str, value: str | None) -> str | None:
    """An ISO 8601 time as the event log stores eventTime (UTC, milliseconds, "Z"), so that strings compare as
    times; a time without an offset is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidInput(
            f"{name} must be an ISO 8601 time such as 2026-01-31T12:00:00Z", code="InvalidTime"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _model_names(names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    if not names or len(names) > MAX_MODEL_NAMES or len(set(names)) != len(names):
        raise InvalidInput(f"modelNames takes 1-{MAX_MODEL_NAMES} distinct model names", code="InvalidModelNames")
    bad = [n for n in names if not MODEL_NAME_PATTERN.fullmatch(n)]
    if bad:
        raise InvalidInput(f"not a model name: {bad[0][:64]!r}", code="InvalidModelNames")
    return list(names)


def _bounded(name: str, value: int | None, maximum: int) -> int:
    if value is None:
        return maximum  # Event Grid's defaults are its maxima (30 attempts, 1,440 minutes)
    if isinstance(value, bool) or not 1 <= value <= maximum:
        raise InvalidInput(f"retryPolicy.{name} must be 1-{maximum}", code="InvalidRetryPolicy")
    return value


def _check_endpoint(endpoint_url: str, *, allow_loopback_http: bool) -> None:
    """What the URL itself shows: an absolute https URL without credentials (http only to loopback, if allowed)."""
    reason = _syntax_problem(endpoint_url or "", allow_loopback_http=allow_loopback_http)
    if reason:
        logger.info("endpoint refused: %s", reason)
        raise endpoint_validation_failed()


def _syntax_problem(endpoint_url: str, *, allow_loopback_http: bool) -> str | None:
    if len(endpoint_url) > MAX_ENDPOINT_URL_CHARS:
        return "URL too long"
    try:
        parts = urlsplit(endpoint_url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a port that is no number or out of range
    except ValueError as err:
        return f"not a URL: {err}"
    if not host or parts.scheme not in {"https", "http"}:
        return "not an absolute http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "credentials in the authority"
    if parts.scheme == "http" and not (allow_loopback_http and _names_loopback(host)):
        return "plain http to a host that is not loopback"
    return None


def _names_loopback(host: str) -> bool:
    if is_loopback_name(host):
        return True
    try:
        address = parse_host_literal(host)
    except ValueError:
        return False
    return address is not None and address.is_loopback
