"""Webhook delivery over HTTP: the subscription validation handshake and event delivery in either schema."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx

from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent
from shared.domain.jobs import utcnow

logger = logging.getLogger(__name__)
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
ORIGIN = "eventgrid.azure.net"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class HttpEndpointValidator:
    """The handshakes Event Grid performs before it sends a webhook any event."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(timeout=TIMEOUT, follow_redirects=False)

    def validate(self, endpoint_url: str, schema: str) -> None:
        try:
            if schema == "CloudEventSchemaV1_0":
                self._cloudevents_handshake(endpoint_url)
            else:
                self._eventgrid_handshake(endpoint_url)
        except httpx.HTTPError as err:
            raise InvalidInput(
                f"the endpoint did not answer the validation handshake: {err}",
                code="EndpointValidationFailed",
            ) from err

    def _eventgrid_handshake(self, endpoint_url: str) -> None:
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
        response = self._client.post(endpoint_url, json=[event], headers={"aeg-event-type": "SubscriptionValidation"})
        echoed = None
        if response.status_code == 200:
            try:
                echoed = response.json().get("validationResponse")
            except ValueError:
                echoed = None
        if echoed != code:
            raise InvalidInput(
                f"the endpoint answered the validation event with {response.status_code} and did not echo "
                'validationCode as {"validationResponse": ...}',
                code="EndpointValidationFailed",
            )

    def _cloudevents_handshake(self, endpoint_url: str) -> None:
        response = self._client.request(
            "OPTIONS", endpoint_url, headers={"WebHook-Request-Origin": ORIGIN, "WebHook-Request-Rate": "120"}
        )
        allowed = response.headers.get("WebHook-Allowed-Origin", "")
        if response.status_code != 200 or allowed not in {ORIGIN, "*"}:
            raise InvalidInput(
                f"the endpoint answered the CloudEvents abuse-protection OPTIONS with {response.status_code} "
                f"and WebHook-Allowed-Origin {allowed!r}; it must allow {ORIGIN}",
                code="EndpointValidationFailed",
            )


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
