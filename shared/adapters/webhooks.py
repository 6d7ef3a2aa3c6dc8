"""Webhook delivery over HTTP: the subscription validation handshake and event delivery in either schema."""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from typing import Any

import httpcore
import httpx

from shared.adapters.egress import EgressPolicy, EgressRefusedError, Resolver, Timeouts, send_bounded
from shared.domain.egress import endpoint_validation_failed, redact_url
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent
from shared.domain.jobs import utcnow

logger = logging.getLogger(__name__)
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
ORIGIN = "eventgrid.azure.net"
# Event Grid waits 30 s for a handshake or a delivery answer (Event Grid delivery and retry docs).
TIMEOUTS = Timeouts(connect=5.0, read=10.0, total=30.0)
# The relay's call to a callback: answered within 25 s, so the relay itself answers inside Event Grid's 30 s.
CALLBACK_TIMEOUTS = Timeouts(connect=5.0, read=25.0, total=25.0)
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
        callback_timeouts: Timeouts = CALLBACK_TIMEOUTS,
    ) -> None:
        self._resolver = resolver
        self._connector = connector
        self._timeouts = timeouts.clamped()
        self._callback_timeouts = callback_timeouts.clamped()
        self._clients: dict[bool, httpx.Client] = {}
        self._callback_clients: dict[tuple[bool, float], httpx.Client] = {}
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

    def check_callback(self, url: str, *, allow_loopback: bool = False) -> None:
        """Resolves the host now: EndpointRefused (an InvalidInput, one generic message) unless every address may
        be called. No handshake: a Logic Apps callback answers 202 to everything and echoes nothing."""
        EgressPolicy(allow_loopback, resolver=self._resolver).check_url(url)

    def deliver_callback(
        self, url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool = False, timeout_seconds: float
    ) -> int:
        """One POST under the egress policy, connect and answer within `timeout_seconds` (rounded down to 0.5 s,
        so that a few clients serve every budget)."""
        seconds = max(0.5, math.floor(min(timeout_seconds, self._callback_timeouts.total) * 2) / 2)
        client = self._callback_client(allow_loopback, seconds)
        try:
            answer = send_bounded(
                client,
                "POST",
                url,
                max_bytes=MAX_DELIVERY_ANSWER_BYTES,
                total_seconds=seconds,
                truncate=True,
                content=body,
                headers=headers,
            )
        except EgressRefusedError as err:
            raise InvalidInput(str(err), code="InvalidEndpoint") from err
        except httpx.TimeoutException as err:
            raise TimeoutError(f"no answer within {seconds:.1f}s") from err
        except httpx.HTTPError as err:
            raise ConnectionError(f"{type(err).__name__}: {err}") from err
        return answer.status_code

    def _callback_client(self, allow_loopback: bool, seconds: float) -> httpx.Client:
        # Its own clients: a callback's answer is awaited the relay's whole budget, not the handshake's read timeout.
        key = (allow_loopback, seconds)
        with self._lock:
            if key not in self._callback_clients:
                policy = EgressPolicy(allow_loopback, resolver=self._resolver)
                # Connecting and the wait for the answer share the budget: together never more than `seconds`.
                connect = min(self._callback_timeouts.connect, seconds / 4)
                timeouts = Timeouts(connect=connect, read=seconds - connect, total=seconds)
                self._callback_clients[key] = policy.client(timeouts, connector=self._connector)
            return self._callback_clients[key]

    def close(self) -> None:
        for client in [*self._clients.values(), *self._callback_clients.values()]:
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
    """The body and headers of one delivery, as Event Grid sends them: batching off (one event per request, an
    array of one in the Event Grid schema), and the aeg-* headers on either schema (Event Grid "Delivery and
    retry", message headers; a CloudEvents delivery carries aeg-event-type too)."""
    if schema == "CloudEventSchemaV1_0":
        body: Any = event.to_cloudevent(source)
        headers = {
            "content-type": "application/cloudevents+json; charset=utf-8",
            "aeg-metadata-version": "1",
            "aeg-data-version": "",
        }
    else:
        body = [event.to_eventgrid()]
        headers = {
            "content-type": "application/json",
            "aeg-metadata-version": "1",
            "aeg-data-version": event.data_version,
        }
    headers.update(
        {
            "aeg-event-type": "Notification",
            "aeg-subscription-name": subscription_name,
            "aeg-delivery-count": str(attempt - 1),
        }
    )
    return body, headers
