"""Events: the Event Grid SDK publishing to the local broker, deliveries with retries, dead-letters, handshakes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvicorn
from azure.core.exceptions import HttpResponseError

from shared.adapters.azure_blob import AzureBlobStore
from shared.adapters.cosmos import CosmosSubscriptionStore, ensure_schema
from shared.adapters.cosmos_client import make_cosmos_client
from shared.adapters.egress import EgressPolicy
from shared.adapters.eventgrid import EventGridEventPublisher
from shared.adapters.servicebus import to_servicebus_message
from shared.adapters.webhooks import HttpEndpointValidator
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent, Subscription
from shared.domain.jobs import ShardMessage
from shared.localhost.broker import LocalEventBroker
from shared.localhost.emulators import Azurite, CosmosServer, free_port
from shared.localhost.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration
KEY = "test-key"


@dataclass
class _Ports:
    """Just the ports the broker uses."""

    subscriptions: Any
    blobs: Any


@pytest.fixture(scope="module")
def broker(azurite: Azurite, cosmos: CosmosServer) -> Iterator[tuple[LocalEventBroker, str, _Ports]]:
    db = ensure_schema(make_cosmos_client(cosmos.endpoint, cosmos.key), f"ev{uuid.uuid4().hex[:8]}")
    ports = _Ports(CosmosSubscriptionStore(db), AzureBlobStore.from_connection_string(azurite.connection_string))
    ports.blobs.ensure_container("deadletter")
    instance = LocalEventBroker(
        lambda: ports,  # type: ignore[arg-type,return-value]
        key=KEY,
        dead_letters=ports.blobs,
        time_scale=3600,  # Event Grid's retry schedule, an hour per second
        egress=EgressPolicy(allow_loopback=True),  # the receivers here listen on loopback
    )
    instance.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(instance.asgi_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield instance, f"http://127.0.0.1:{port}/api/events", ports
    server.should_exit = True
    thread.join(timeout=5)
    instance.stop()


def _event(tenant: str, event_type: str = "AIaaS.Job.Succeeded") -> PlatformEvent:
    job = uuid.uuid4().hex
    return PlatformEvent(
        id=uuid.uuid4().hex,
        event_type=event_type,
        subject=f"/tenants/{tenant}/jobs/{job}",
        data={"jobId": job},
        event_time="2026-11-22T00:00:00Z",
        topic=tenant,
    )


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_published_events_reach_only_the_tenants_matching_subscriptions(broker: Any) -> None:
    _instance, endpoint, ports = broker
    publisher = EventGridEventPublisher(endpoint, key=KEY)
    with WebhookReceiver() as acme_hook, WebhookReceiver() as globex_hook, WebhookReceiver() as failed_only:
        ports.subscriptions.put_subscription(Subscription("acme", uuid.uuid4().hex, acme_hook.url))
        ports.subscriptions.put_subscription(
            Subscription("acme", uuid.uuid4().hex, failed_only.url, event_types=["AIaaS.Job.Failed"])
        )
        ports.subscriptions.put_subscription(Subscription("globex", uuid.uuid4().hex, globex_hook.url))
        event = _event("acme")
        publisher.publish([event])
        received = acme_hook.wait_for(1, timeout=10)
        time.sleep(0.3)
        assert [e["id"] for e in acme_hook.events] == [event.id]
        assert received[0]["eventType"] == "AIaaS.Job.Succeeded" and received[0]["topic"] == "acme"
        assert globex_hook.events == [] and failed_only.events == []


def test_an_event_published_twice_is_delivered_twice_with_its_id_as_event_grid_does(broker: Any) -> None:
    """Event Grid keeps no record of the ids it has seen: the broker must not hide a publisher's duplicates,
    or the tests that count one terminal event per job could not see one."""
    _instance, endpoint, ports = broker
    publisher = EventGridEventPublisher(endpoint, key=KEY)
    with WebhookReceiver() as hook:
        ports.subscriptions.put_subscription(Subscription("twice", uuid.uuid4().hex, hook.url))
        event = _event("twice")
        publisher.publish([event])
        publisher.publish([event])

        delivered = hook.wait_for(2, timeout=10)

    assert [e["id"] for e in delivered] == [event.id, event.id]


def test_cloudevents_subscription_gets_a_cloudevent(broker: Any) -> None:
    _, endpoint, ports = broker
    with WebhookReceiver() as hook:
        ports.subscriptions.put_subscription(
            Subscription("ce-tenant", uuid.uuid4().hex, hook.url, schema="CloudEventSchemaV1_0")
        )
        event = _event("ce-tenant")
        EventGridEventPublisher(endpoint, key=KEY).publish([event])
        [delivered] = hook.wait_for(1, timeout=10)
        assert delivered["specversion"] == "1.0" and delivered["id"] == event.id
        assert delivered["type"] == event.event_type and delivered["subject"] == event.subject
        assert hook.requests[-1]["headers"]["content-type"].startswith("application/cloudevents+json")


def test_failed_deliveries_are_retried_then_dead_lettered(broker: Any) -> None:
    instance, endpoint, ports = broker
    with WebhookReceiver(fail_first=2) as flaky:
        ports.subscriptions.put_subscription(
            Subscription("flaky", uuid.uuid4().hex, flaky.url, max_delivery_attempts=3)
        )
        event = _event("flaky")
        EventGridEventPublisher(endpoint, key=KEY).publish([event])
        assert [e["id"] for e in flaky.wait_for(1, timeout=10)] == [event.id]
        [delivery] = [d for d in instance.deliveries if d.event.id == event.id]
        assert _wait(lambda: delivery.status == "delivered")
        assert delivery.attempts == 3

    dead_sub = Subscription(
        "gone", uuid.uuid4().hex, f"http://127.0.0.1:{free_port()}/nobody-listens", max_delivery_attempts=3
    )
    ports.subscriptions.put_subscription(dead_sub)
    lost = _event("gone")
    EventGridEventPublisher(endpoint, key=KEY).publish([lost])
    prefix = f"AIAAS-{dead_sub.subscription_id.upper()}/"  # Event Grid's layout: the name upper-cased
    assert _wait(lambda: any(ports.blobs.list_blobs("deadletter", prefix=prefix)))
    [blob] = ports.blobs.list_blobs("deadletter", prefix=prefix)
    [record] = orjson.loads(ports.blobs.read_bytes("deadletter", blob.name))
    assert record["deliveryAttempts"] == 3 and record["id"] == lost.id
    assert record["deadLetterReason"] == "MaxDeliveryAttemptsExceeded" and record["lastDeliveryOutcome"]


def test_publishing_with_a_wrong_key_is_refused(broker: Any) -> None:
    _, endpoint, _ = broker
    with pytest.raises(HttpResponseError) as err:
        EventGridEventPublisher(endpoint, key="wrong").publish([_event("acme")])
    assert err.value.status_code == 401


def test_validation_handshakes() -> None:
    validator = HttpEndpointValidator()
    with WebhookReceiver() as hook:
        validator.validate(hook.url, "EventGridSchema", allow_loopback=True)
        validator.validate(hook.url, "CloudEventSchemaV1_0", allow_loopback=True)
        assert hook.requests[0]["headers"]["aeg-event-type"] == "SubscriptionValidation"
    with pytest.raises(InvalidInput) as err:
        validator.validate(f"http://127.0.0.1:{free_port()}/closed", "EventGridSchema", allow_loopback=True)
    assert err.value.code == "EndpointValidationFailed"


def test_servicebus_message_carries_a_duplicate_detection_id_and_no_session() -> None:
    shard = ShardMessage("acme", "job42", 3, 8, byte_start=100, byte_end=200, first_record_index=17)
    message = to_servicebus_message(shard)
    assert message.session_id is None  # a tenant-wide session would run its shards one at a time; fairness
    # between tenants is the dispatcher's (shared.services.dispatch)
    assert message.message_id == "job42:3"  # a re-sent shard is dropped by duplicate detection
    assert message.content_type == "application/json"
    assert ShardMessage.from_dict(orjson.loads(b"".join(message.body))) == shard
