"""Event subscriptions: a tenant's webhooks, admitted only after they pass the validation handshake."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlparse

from shared.config import is_loopback_url
from shared.domain.errors import InvalidInput
from shared.domain.events import EVENT_TYPES, SCHEMAS, Subscription
from shared.services.platform import Platform

logger = logging.getLogger(__name__)
MAX_SUBSCRIPTIONS_PER_TENANT = 25


def create_subscription(
    platform: Platform,
    tenant_id: str,
    endpoint_url: str,
    *,
    schema: str = "EventGridSchema",
    event_types: list[str] | None = None,
    allow_loopback_http: bool = False,
) -> Subscription:
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
    platform.validator.validate(endpoint_url, schema)
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
    parsed = urlparse(endpoint_url or "")
    if not parsed.hostname or parsed.scheme not in {"https", "http"}:
        raise InvalidInput("endpointUrl must be an absolute https URL", code="InvalidEndpoint")
    if parsed.scheme == "http" and not (allow_loopback_http and is_loopback_url(endpoint_url)):
        raise InvalidInput("endpointUrl must use https", code="InvalidEndpoint")
    if parsed.username or parsed.password:
        raise InvalidInput("endpointUrl must not carry credentials in its authority", code="InvalidEndpoint")
