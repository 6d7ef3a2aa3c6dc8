"""EventRouting on Azure: tenant subscriptions as Event Grid event subscriptions on the tenant's domain topic."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from shared.adapters.eventgrid import to_eventgrid_event
from shared.domain.delivery import (
    RELAY_HEADER,
    SECRET_HEADER,
    eventgrid_subscription_name,
    redelivery_topic,
    relay_key,
    relay_url,
)
from shared.domain.egress import endpoint_validation_failed
from shared.domain.errors import ServiceUnavailable
from shared.domain.events import PlatformEvent, Subscription

logger = logging.getLogger(__name__)

DOMAIN_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/Microsoft\.EventGrid/domains/(?P<domain>[^/]+)$",
    re.IGNORECASE,
)
# Event Grid takes an array of events of at most 1 MB in total per publish request, each event at most 1 MB
# (413 Payload Too Large past either: Event Grid event schema), and at most 5,000 events per request ("Event Grid
# quotas and limits": incoming events per batch). Batches stay under both, counted as the JSON Event Grid receives
# plus room for what the SDK adds per event.
PUBLISH_REQUEST_BYTES = 1_000_000
PUBLISH_REQUEST_EVENTS = 5_000
PER_EVENT_OVERHEAD_BYTES = 64  # a comma, and a longer eventTime (microseconds) than the event log keeps
# How long a create or delete waits for Event Grid to finish (the validation handshake alone may take 30 s).
POLL_TIMEOUT_SECONDS = 120.0
# The SDK polls every 30 s unless Event Grid sends Retry-After: a tenant's POST would wait that long for a create
# that usually takes seconds (a handshake included).
POLL_INTERVAL_SECONDS = 2.0
# Event Grid's wording when the destination failed the validation handshake (code "Url validation"; messages
# "Webhook validation handshake failed for ..." or "The attempt to validate the provided endpoint ... failed").
_VALIDATION_FAILURE = re.compile(
    r"url validation|validation handshake|validate the provided endpoint|esvalidation", re.I
)


def parse_domain_id(domain_id: str) -> tuple[str, str, str]:
    """(Azure subscription id, resource group, domain name) of an Event Grid domain's resource id."""
    match = DOMAIN_ID.fullmatch(domain_id.strip())
    if not match:
        raise ValueError(f"{domain_id!r} is not an Event Grid domain resource id")
    return match["subscription"], match["group"], match["domain"]


def publish_batches(
    events: Sequence[dict[str, Any]], limit: int = PUBLISH_REQUEST_BYTES, most: int = PUBLISH_REQUEST_EVENTS
) -> Iterator[list[int]]:
    """Indexes of `events` in order, in runs of at most `most` whose JSON array stays under `limit` bytes (an event
    alone is one run whatever its size: Event Grid answers 413 for it, which the caller sees)."""
    batch: list[int] = []
    size = 2  # the array's brackets
    for index, event in enumerate(events):
        length = len(json.dumps(event, separators=(",", ":")).encode()) + PER_EVENT_OVERHEAD_BYTES
        if batch and (size + length > limit or len(batch) == most):
            yield batch
            batch, size = [], 2
        batch.append(index)
        size += length
    if batch:
        yield batch


def _is_validation_failure(error: HttpResponseError) -> bool:
    detail = error.error
    words = " ".join(str(part) for part in (getattr(detail, "code", ""), getattr(detail, "message", ""), error.message))
    return bool(_VALIDATION_FAILURE.search(words))


class EventGridRouting:
    """Creates, deletes and redelivers through azure-mgmt-eventgrid and azure-eventgrid with the function app's
    identity (EventGrid EventSubscription Contributor and EventGrid Data Sender on the domain).

    Each platform subscription is two Event Grid event subscriptions of the same name: one on the tenant's domain
    topic, one on the subscription's own redelivery topic (`redelivery_topic`), so that a redelivery reaches it
    alone. `client` / `publisher` replace the SDK clients; `client_options` (azure-core options: a transport,
    retries) go to the management client built here.
    """

    def __init__(
        self,
        domain_id: str,
        credential: Any,
        *,
        publish_endpoint: str,
        deadletter_account_id: str,
        deadletter_container: str,
        api_url: str,
        relay_key: str,
        client: Any = None,
        publisher: Any = None,
        client_options: dict[str, Any] | None = None,
        poll_timeout_seconds: float = POLL_TIMEOUT_SECONDS,
    ) -> None:
        self._domain_id = domain_id
        subscription_id, self._group, self._domain = parse_domain_id(domain_id)
        if client is None:
            from azure.mgmt.eventgrid import EventGridManagementClient

            client = EventGridManagementClient(credential, subscription_id, **(client_options or {}))
        if publisher is None:
            from azure.eventgrid import EventGridPublisherClient

            # For a basic-tier domain the public client passes no option (a transport neither) to the one it
            # wraps (azure-eventgrid 4.22.1): a test hands in its own `publisher`.
            publisher = EventGridPublisherClient(publish_endpoint, credential)
        self._client = client
        self._publisher = publisher
        self._deadletter_account_id = deadletter_account_id
        self._deadletter_container = deadletter_container
        self._api_url = api_url
        self._relay_key = relay_key
        self._poll_timeout = poll_timeout_seconds

    # ------------------------------------------------------------------ the event subscription

    def event_subscription(self, subscription: Subscription, *, secret: str | None = None) -> Any:
        """The Event Grid event subscription for a platform subscription (the same for both topics)."""
        from azure.mgmt.eventgrid import models

        headers: list[Any] = []
        if subscription.kind == "callback":
            url = relay_url(self._api_url, subscription.tenant_id, subscription.subscription_id)
            value = relay_key(self._relay_key, subscription.tenant_id, subscription.subscription_id)
            headers.append(models.StaticDeliveryAttributeMapping(name=RELAY_HEADER, value=value, is_secret=True))
        else:
            url = subscription.endpoint_url
            if secret:
                headers.append(models.StaticDeliveryAttributeMapping(name=SECRET_HEADER, value=secret, is_secret=True))
        advanced: list[Any] = []
        if subscription.model_names:
            advanced.append(models.StringInAdvancedFilter(key="data.model.name", values=list(subscription.model_names)))
        return models.EventSubscription(
            destination=models.WebHookEventSubscriptionDestination(
                endpoint_url=url,
                # Batching off: one event per delivery, as the contract and the local broker deliver.
                max_events_per_batch=1,
                delivery_attribute_mappings=headers or None,
            ),
            filter=models.EventSubscriptionFilter(
                included_event_types=list(subscription.event_types), advanced_filters=advanced or None
            ),
            event_delivery_schema=subscription.schema,
            retry_policy=models.RetryPolicy(
                max_delivery_attempts=subscription.max_delivery_attempts,
                event_time_to_live_in_minutes=subscription.event_ttl_minutes,
            ),
            # The domain's own system identity writes the dead letters (Storage Blob Data Contributor on the
            # container only, bicep/modules/rbac.bicep): no key or SAS in the subscription.
            dead_letter_with_resource_identity=models.DeadLetterWithResourceIdentity(
                identity=models.EventSubscriptionIdentity(type="SystemAssigned"),
                dead_letter_destination=models.StorageBlobDeadLetterDestination(
                    resource_id=self._deadletter_account_id, blob_container_name=self._deadletter_container
                ),
            ),
        )

    def _topics(self, subscription: Subscription) -> tuple[str, str]:
        return subscription.tenant_id, redelivery_topic(subscription.tenant_id, subscription.subscription_id)

    def _wait(self, poller: Any, what: str) -> Any:
        result = poller.result(timeout=self._poll_timeout)
        if not poller.done():
            raise ServiceUnavailable(
                f"Event Grid did not finish {what} in {self._poll_timeout:.0f} s", retry_after_seconds=30
            )
        return result

    # ------------------------------------------------------------------ the port

    def create_route(self, subscription: Subscription, *, secret: str | None = None) -> None:
        if subscription.has_secret and not secret and subscription.kind == "webhook":
            # Writing it again without the secret would drop the header the tenant relies on.
            raise ValueError("a subscription with a secret is routed with its secret")
        name = eventgrid_subscription_name(subscription.subscription_id)
        body = self.event_subscription(subscription, secret=secret)
        created: list[str] = []
        try:
            for topic in self._topics(subscription):
                # Counted before the call: a create that failed may leave a Failed event subscription behind.
                created.append(topic)
                poller = self._client.domain_topic_event_subscriptions.begin_create_or_update(
                    self._group, self._domain, topic, name, body, polling_interval=POLL_INTERVAL_SECONDS
                )
                self._wait(poller, f"creating {name} on {topic}")
        except HttpResponseError as error:
            self._undo(name, created)
            # Status and code only: Event Grid's message quotes the endpoint URL, whose query may hold a secret.
            code = getattr(error.error, "code", "") or ""
            if _is_validation_failure(error):
                logger.info("Event Grid refused %s: the endpoint failed validation (%s)", name, code)
                raise endpoint_validation_failed() from None
            logger.warning("creating Event Grid subscription %s failed: %s %s", name, error.status_code, code)
            raise ServiceUnavailable("Event Grid did not create the subscription; try again") from None
        except AzureError as error:  # no answer at all (connection, DNS, timeout)
            self._undo(name, created)
            logger.warning("creating Event Grid subscription %s failed: %s", name, error)
            raise ServiceUnavailable("Event Grid did not create the subscription; try again") from None
        except ServiceUnavailable:
            self._undo(name, created)
            raise
        logger.info("Event Grid subscription %s created on %s and its redelivery topic", name, subscription.tenant_id)

    def _undo(self, name: str, topics: list[str]) -> None:
        """A route is both event subscriptions or none: remove what was created (a missing one is fine)."""
        for topic in topics:
            try:
                self._delete(topic, name)
            except Exception:  # the original error is what the caller must see
                logger.exception("could not remove the half-created %s on %s", name, topic)

    def _delete(self, topic: str, name: str) -> None:
        try:
            poller = self._client.domain_topic_event_subscriptions.begin_delete(
                self._group, self._domain, topic, name, polling_interval=POLL_INTERVAL_SECONDS
            )
            self._wait(poller, f"deleting {name} on {topic}")
        except ResourceNotFoundError:
            pass  # already gone (or its domain topic never existed): what was asked

    def delete_route(self, subscription: Subscription) -> None:
        name = eventgrid_subscription_name(subscription.subscription_id)
        try:
            for topic in self._topics(subscription):
                self._delete(topic, name)
        except AzureError as error:
            logger.warning("deleting Event Grid subscription %s failed: %s", name, error)
            raise ServiceUnavailable("Event Grid did not delete the subscription; try again") from None
        logger.info("Event Grid subscription %s deleted", name)

    def redeliver(self, subscription: Subscription, events: Sequence[PlatformEvent]) -> None:
        """Publishes the events, their ids unchanged, to the subscription's own redelivery topic."""
        topic = redelivery_topic(subscription.tenant_id, subscription.subscription_id)
        moved = [dataclasses.replace(event, topic=topic) for event in events]
        sent = 0
        try:
            for batch in publish_batches([event.to_eventgrid() for event in moved]):
                self._publisher.send([to_eventgrid_event(moved[i]) for i in batch])
                sent += len(batch)
        except AzureError as error:
            logger.warning("redelivery to %s stopped after %d of %d events: %s", topic, sent, len(moved), error)
            raise ServiceUnavailable(
                f"Event Grid took {sent} of {len(moved)} events for redelivery; try again"
            ) from None
        logger.info("%d events published for redelivery to %s", sent, subscription.subscription_id)
