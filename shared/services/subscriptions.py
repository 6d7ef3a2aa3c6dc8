"""Event subscriptions: a tenant's webhooks, admitted only after they pass the validation handshake."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlsplit

from shared.domain.egress import endpoint_validation_failed, is_loopback_name, parse_host_literal
from shared.domain.errors import InvalidInput
from shared.domain.events import EVENT_TYPES, SCHEMAS, Subscription
from shared.services.platform import Platform

logger = logging.getLogger(__name__)
MAX_SUBSCRIPTIONS_PER_TENANT = 25
MAX_ENDPOINT_URL_CHARS = 2048


def create_subscription(
    platform: Platform,
    tenant_id: str,
    endpoint_url: str,
    *,
    schema: str = "EventGridSchema",
    event_types: list[str] | None = None,
    allow_loopback_http: bool = False,
) -> Subscription:
    """Validates and stores a subscription. `allow_loopback_http` (AIAAS_ALLOW_LOOPBACK_ENDPOINTS, development
    only) lets the endpoint be on loopback, over http too; every other endpoint is https on a public address.

    Whatever is wrong with the endpoint (not https, a refused address, a closed port, a TLS error, a wrong answer),
    the caller gets the same EndpointValidationFailed: the handshake must not scan the platform's network for it.
    """
    _check_endpoint(endpoint_url, allow_loopback_http=allow_loopback_http)
    if schema not in SCHEMAS:
        raise InvalidInput(f"schema must be one of {', '.join(SCHEMAS)}", code="InvalidSchema")
    types = list(event_types) if event_types else list(EVENT_TYPES)
    unknown = [t for t in types if not t.startswith("AIaaS.")]
    if unknown or len(set(types)) != len(types):
        raise InvalidInput(f"unknown or repeated event types: {unknown or types}", code="InvalidEventTypes")
    if len(platform.subscriptions.list_subscriptions(tenant_id)) >= MAX_SUBSCRIPTIONS_PER_TENANT:
        raise InvalidInput(
            f"at most {MAX_SUBSCRIPTIONS_PER_TENANT} subscriptions per tenant", code="TooManySubscriptions"
        )
    try:
        platform.validator.validate(endpoint_url, schema, allow_loopback=allow_loopback_http)
    except InvalidInput as err:
        logger.info("endpoint validation failed: %s", err.message, extra={"tenant_id": tenant_id})
        raise endpoint_validation_failed() from None
    subscription = Subscription(
        tenant_id=tenant_id,
        subscription_id=uuid.uuid4().hex,
        endpoint_url=endpoint_url,
        schema=schema,
        event_types=types,
    )
    platform.subscriptions.put_subscription(subscription)
    logger.info("subscription %s created", subscription.subscription_id, extra={"tenant_id": tenant_id})
    return subscription


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
