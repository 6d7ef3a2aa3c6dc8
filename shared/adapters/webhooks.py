"""Webhook delivery over HTTP: the subscription validation handshake and event delivery in either schema."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import httpcore
import httpx

from shared.adapters.egress import EgressPolicy, Resolver, Timeouts, send_bounded
from shared.domain.egress import endpoint_validation_failed, redact_url
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent
from shared.domain.jobs import utcnow

logger = logging.getLogger(__name__)
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
ORIGIN = "eventgrid.azure.net"
# Event Grid waits 30 s for a handshake or a delivery answer (Event Grid delivery and retry docs).
TIMEOUTS = Timeouts(connect=5.0, read=10.0, total=30.0)
# A handshake answer is `{"validationResponse": "<code>"}`: a few KB is plenty, and nothing bigger is read.
MAX_HANDSHAKE_BYTES = 8 * 1024
# A delivery's answer body is never looked at; read at most this much of it before the connection goes back.
MAX_DELIVERY_ANSWER_BYTES = 64 * 1024


class HandshakeFailed(Exception):
    """Why a handshake failed, for the server-side log only: the tenant gets one generic error."""


class HttpEndpointValidator:
    """The handshakes Event Grid performs before it sends a webhook any event, under the egress policy."""

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        connector: httpcore.NetworkBackend | None = None,
        timeouts: Timeouts = TIMEOUTS,
    ) -> None:
        self._resolver = resolver
        self._connector = connector
        self._timeouts = timeouts.clamped()
        self._clients: dict[bool, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, allow_loopback: bool) -> httpx.Client:
        with self._lock:
            if allow_loopback not in self._clients:
                policy = EgressPolicy(allow_loopback, resolver=self._resolver)
                self._clients[allow_loopback] = policy.client(self._timeouts, connector=self._connector)
            return self._clients[allow_loopback]

    def validate(self, endpoint_url: str, schema: str, *, allow_loopback: bool = False) -> None:
        """Passes, or raises the one generic EndpointValidationFailed: whether the address was refused, the port
        closed, TLS failed or the endpoint answered wrongly, the tenant sees the same (the reason is logged)."""
        client = self._client(allow_loopback)
        try:
            if schema == "CloudEventSchemaV1_0":
                _cloudevents_handshake(client, endpoint_url, self._timeouts.total)
            else:
                _eventgrid_handshake(client, endpoint_url, self._timeouts.total)
        except (httpx.HTTPError, HandshakeFailed, InvalidInput) as err:
            logger.info(
                "validation handshake with %s failed: %s: %s", redact_url(endpoint_url), type(err).__name__, err
            )
            raise endpoint_validation_failed() from None

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def _eventgrid_handshake(client: httpx.Client, endpoint_url: str, total_seconds: float) -> None:
    code = uuid.uuid4().hex
    event = {
        "id": uuid.uuid4().hex,
        "topic": "aiaas",
        "subject": "",
        "eventType": VALIDATION_EVENT,
        "eventTime": utcnow(),
        "data": {"validationCode": code, "validationUrl": None},
        "dataVersion": "2",
        "metadataVersion": "1",
    }
    answer = send_bounded(
        client,
        "POST",
        endpoint_url,
        max_bytes=MAX_HANDSHAKE_BYTES,
        total_seconds=total_seconds,
        content=json.dumps([event]).encode(),
        headers={"content-type": "application/json", "aeg-event-type": "SubscriptionValidation"},
    )
    if answer.status_code != 200:  # a 3xx too: redirects are never followed
        raise HandshakeFailed(f"answered {answer.status_code}")
    try:
        echoed = json.loads(answer.content).get("validationResponse")
    except (ValueError, AttributeError):
        echoed = None
    if echoed != code:
        raise HandshakeFailed('did not echo validationCode as {"validationResponse": ...}')


def _cloudevents_handshake(client: httpx.Client, endpoint_url: str, total_seconds: float) -> None:
    answer = send_bounded(
        client,
        "OPTIONS",
        endpoint_url,
        max_bytes=MAX_HANDSHAKE_BYTES,
        total_seconds=total_seconds,
        headers={"WebHook-Request-Origin": ORIGIN, "WebHook-Request-Rate": "120"},
    )
    allowed = answer.headers.get("WebHook-Allowed-Origin", "")
    if answer.status_code != 200 or allowed not in {ORIGIN, "*"}:
        raise HandshakeFailed(f"answered {answer.status_code} with WebHook-Allowed-Origin {allowed!r}")


def delivery_request(
    event: PlatformEvent, schema: str, *, subscription_name: str, attempt: int, source: str
) -> tuple[Any, dict[str, str]]:
    """The body and headers of one delivery, as Event Grid sends them."""
    if schema == "CloudEventSchemaV1_0":
        body: Any = event.to_cloudevent(source)
        headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
    else:
        body = [event.to_eventgrid()]
        headers = {"content-type": "application/json", "aeg-event-type": "Notification"}
    headers.update({"aeg-subscription-name": subscription_name, "aeg-delivery-count": str(attempt - 1)})
    return body, headers
