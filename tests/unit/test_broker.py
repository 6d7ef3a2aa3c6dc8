"""The local event broker follows Event Grid's delivery rules, against real loopback endpoints."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from shared.adapters.egress import EgressPolicy
from shared.domain import delivery as rules
from shared.domain.events import PlatformEvent, Subscription
from shared.localhost.broker import TIMED_OUT, UNREACHABLE, LocalEventBroker
from shared.localhost.emulators import free_port
from shared.localhost.routing import LocalBrokerRouting
from shared.localhost.webhook_receiver import WebhookReceiver
from shared.services.platform import Platform
from tests.fakes import InMemoryBlobStore, InMemorySecretStore, make_platform

KEY = "broker-test-key"
RELAY_MASTER = "relay-master-for-tests"


class Rig:
    """A broker over a fake platform, dead-lettering into a store of its own (the platform account)."""

    def __init__(self, *, scale: float, timeout: float = 2.0, loopback: bool = True) -> None:
        self.platform: Platform = make_platform()
        self.dead_letters = InMemoryBlobStore()
        self.dead_letters.ensure_container("deadletter")
        self.secrets = InMemorySecretStore()
        self.api_url = ""
        self.scale = scale
        self.timeout = timeout
        self.loopback = loopback
        self.broker: LocalEventBroker | None = None

    def start(self) -> LocalEventBroker:
        self.broker = LocalEventBroker(
            lambda: self.platform,
            key=KEY,
            dead_letters=self.dead_letters,
            secrets=self.secrets,
            api_url=self.api_url,
            relay_master_key=RELAY_MASTER,
            time_scale=self.scale,
            timeout_seconds=self.timeout,
            egress=EgressPolicy(allow_loopback=self.loopback),
        )
        self.broker.start()
        return self.broker

    def subscribe(self, url: str, **fields: Any) -> Subscription:
        sub = Subscription("acme", uuid.uuid4().hex, url, **fields)
        self.platform.subscriptions.put_subscription(sub)
        return sub

    def letters(self, sub: Subscription) -> list[tuple[str, list[dict[str, Any]]]]:
        prefix = rules.eventgrid_subscription_name(sub.subscription_id).upper() + "/"
        return [
            (blob.name, orjson.loads(self.dead_letters.read_bytes("deadletter", blob.name)))
            for blob in self.dead_letters.list_blobs("deadletter", prefix=prefix)
        ]


@pytest.fixture
def rig() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        made.append(Rig(**kwargs))
        return made[-1]

    yield make
    for each in made:
        if each.broker is not None:
            each.broker.stop()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def event(tenant: str = "acme", model: str = "m") -> PlatformEvent:
    job = uuid.uuid4().hex
    return PlatformEvent(
        id=uuid.uuid4().hex,
        event_type="AIaaS.Job.Succeeded",
        subject=f"/tenants/{tenant}/jobs/{job}",
        data={"jobId": job, "model": {"name": model, "version": "1"}},
        event_time="2026-12-01T00:00:00Z",
        topic=tenant,
    )


def wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def settled(broker: LocalEventBroker) -> Callable[[], bool]:
    return lambda: all(d.status in {"delivered", "dead-lettered", "dropped"} for d in broker.deliveries)


def test_one_event_per_post_with_event_grids_headers(rig: Callable[..., Rig], hook: WebhookReceiver) -> None:
    r = rig(scale=3600)
    sub = r.subscribe(hook.url)
    other = r.subscribe(hook.url, model_names=["another-model"])
    broker = r.start()
    first, second = event(), event()
    assert broker.accept([first, second]) == 2  # the model filter keeps `other` out
    assert wait(lambda: len(hook.events) == 2)
    assert wait(settled(broker))
    assert sorted(e["id"] for e in hook.events) == sorted([first.id, second.id])
    for request in hook.requests:
        assert isinstance(request["body"], list) and len(request["body"]) == 1  # batching off
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["aeg-event-type"] == "Notification"
        assert headers["aeg-delivery-count"] == "0"
        assert headers["aeg-subscription-name"] == f"AIAAS-{sub.subscription_id.upper()}"
        assert rules.SECRET_HEADER not in headers and rules.RELAY_HEADER not in headers
    assert {d["subscriptionName"] for d in hook.deliveries} == {f"AIAAS-{sub.subscription_id.upper()}"}
    assert other.subscription_id not in str(hook.requests)


def test_retries_follow_event_grids_schedule_then_dead_letter(rig: Callable[..., Rig], hook: WebhookReceiver) -> None:
    r = rig(scale=3600)
    sub = r.subscribe(hook.url, max_delivery_attempts=6)
    hook.down(3600, status=503)
    broker = r.start()
    lost = event()
    broker.accept([lost])
    assert wait(settled(broker))
    [delivery] = broker.deliveries
    assert delivery.status == "dead-lettered"
    # Every attempt carries the same event id and counts up from 0.
    assert [d["deliveryCount"] for d in hook.deliveries] == [0, 1, 2, 3, 4, 5]
    assert {i for d in hook.deliveries for i in d["eventIds"]} == {lost.id}
    # 10 s, 30 s, 1 min, 5 min, 10 min between them (scaled); none after the last allowed attempt.
    assert [a.retry_in for a in delivery.history] == [10 / 3600, 30 / 3600, 60 / 3600, 300 / 3600, 600 / 3600, None]
    [(_, [item])] = r.letters(sub)
    assert item["deadLetterReason"] == rules.MAX_ATTEMPTS_EXCEEDED
    assert item["deliveryAttempts"] == 6
    assert item["lastHttpStatusCode"] == 503 and item["lastDeliveryOutcome"] == "Busy"


@pytest.mark.parametrize("status", sorted(rules.NO_RETRY_STATUSES))
def test_client_errors_are_dead_lettered_after_one_attempt(
    rig: Callable[..., Rig], hook: WebhookReceiver, status: int
) -> None:
    r = rig(scale=3600)
    sub = r.subscribe(hook.url)
    hook.answer_status = status
    broker = r.start()
    refused = event()
    broker.accept([refused])
    assert wait(settled(broker))
    assert len(hook.deliveries) == 1
    [(_, [item])] = r.letters(sub)
    assert item["deadLetterReason"] == rules.CLIENT_ERROR and item["deliveryAttempts"] == 1
    assert item["lastHttpStatusCode"] == status and item["id"] == refused.id


@pytest.mark.parametrize("status", [302, 404, 408, 429, 500, 503])
def test_other_failures_are_retried(rig: Callable[..., Rig], hook: WebhookReceiver, status: int) -> None:
    r = rig(scale=3600)
    sub = r.subscribe(hook.url, max_delivery_attempts=3)
    hook.answer_status = status
    broker = r.start()
    broker.accept([event()])
    assert wait(settled(broker))
    assert [d["deliveryCount"] for d in hook.deliveries] == [0, 1, 2]
    [(_, [item])] = r.letters(sub)
    assert item["deadLetterReason"] == rules.MAX_ATTEMPTS_EXCEEDED and item["lastHttpStatusCode"] == status


@pytest.mark.parametrize("status", sorted(rules.SUCCESS_STATUSES))
def test_success_statuses_deliver(rig: Callable[..., Rig], hook: WebhookReceiver, status: int) -> None:
    r = rig(scale=3600)
    sub = r.subscribe(hook.url)
    hook.answer_status = status
    broker = r.start()
    broker.accept([event()])
    assert wait(settled(broker))
    assert [d.status for d in broker.deliveries] == ["delivered"] and len(hook.deliveries) == 1
    assert r.letters(sub) == []


def test_no_answer_and_a_closed_connection_are_retried(rig: Callable[..., Rig], hook: WebhookReceiver) -> None:
    r = rig(scale=3600, timeout=0.5)
    closed = r.subscribe(hook.url, max_delivery_attempts=2)
    nobody = r.subscribe(f"http://127.0.0.1:{free_port()}/hook", max_delivery_attempts=2)
    hook.down(3600, status=None)
    broker = r.start()
    broker.accept([event()])
    assert wait(settled(broker))
    assert {d.last_error for d in broker.deliveries} == {UNREACHABLE}
    for sub in (closed, nobody):
        [(_, [item])] = r.letters(sub)
        assert item["deliveryAttempts"] == 2 and item["lastHttpStatusCode"] is None
        assert item["lastDeliveryOutcome"] == "GenericError"


def test_a_slow_endpoint_is_timed_out_and_retried(rig: Callable[..., Rig], hook: WebhookReceiver) -> None:
    r = rig(scale=3600, timeout=0.5)
    sub = r.subscribe(hook.url)
    hook.slow_first(1, 1.5)
    broker = r.start()
    slow = event()
    broker.accept([slow])
    assert wait(lambda: broker.deliveries[0].status == "delivered")
    [delivery] = broker.deliveries
    assert [a.outcome for a in delivery.history] == ["TimedOut", "Succeeded"]
    assert delivery.history[0].status is None
    assert [d["deliveryCount"] for d in hook.deliveries] == [0, 1]
    # The slow endpoint did get the first one too: a duplicate with the same id, as with Event Grid.
    assert wait(lambda: len(hook.events) == 2)
    assert [e["id"] for e in hook.events] == [slow.id, slow.id]
    assert r.letters(sub) == []
    assert TIMED_OUT not in {d.last_error for d in broker.deliveries}  # cleared by the success


def test_a_retry_that_would_fall_after_the_time_to_live_dead_letters(
    rig: Callable[..., Rig], hook: WebhookReceiver
) -> None:
    # A minute per half second: attempts at 0, 10 s and 40 s; the next (40 s + 1 min) is past the 1-minute TTL.
    r = rig(scale=120)
    sub = r.subscribe(hook.url, event_ttl_minutes=1)
    hook.down(3600)
    broker = r.start()
    broker.accept([event()])
    assert wait(settled(broker))
    assert [d["deliveryCount"] for d in hook.deliveries] == [0, 1, 2]
    [(_, [item])] = r.letters(sub)
    assert item["deadLetterReason"] == rules.TTL_EXCEEDED and item["deliveryAttempts"] == 3


def test_the_secret_goes_in_its_header_as_the_route_stored_it(rig: Callable[..., Rig], hook: WebhookReceiver) -> None:
    r = rig(scale=3600)
    routing = LocalBrokerRouting("http://127.0.0.1:1/broker", KEY, r.secrets)
    sub = r.subscribe(hook.url, has_secret=True)
    routing.create_route(sub, secret="s3cret-s3cret-s3cret")
    broker = r.start()
    broker.accept([event()])
    assert wait(settled(broker))
    [request] = hook.requests
    assert request["headers"][rules.SECRET_HEADER] == "s3cret-s3cret-s3cret"
    routing.create_route(sub, secret=None)  # the tenant removed it
    assert r.secrets.values == {}


def test_a_callback_is_delivered_to_the_relay_with_its_key(rig: Callable[..., Rig], hook: WebhookReceiver) -> None:
    r = rig(scale=3600, loopback=False)  # tenants' endpoints may not be loopback; the relay is the platform's own
    r.api_url = hook.url.removesuffix("/events") + "/api"
    sub = r.subscribe("https://prod-01.westeurope.logic.azure.com/workflows/x?sig=abc", kind="callback")
    broker = r.start()
    broker.accept([event()])
    assert wait(settled(broker))
    [seen] = hook.deliveries
    assert seen["path"] == f"/api/relay/acme/{sub.subscription_id}"
    assert seen["headers"][rules.RELAY_HEADER] == rules.relay_key(RELAY_MASTER, "acme", sub.subscription_id)
    assert broker.deliveries[0].status == "delivered"


def test_deleting_the_subscription_stops_its_deliveries(rig: Callable[..., Rig], hook: WebhookReceiver) -> None:
    r = rig(scale=10)  # the first retry comes after a second: time to delete the subscription
    sub = r.subscribe(hook.url)
    hook.down(3600)
    broker = r.start()
    broker.accept([event()])
    assert wait(lambda: len(hook.deliveries) == 1)
    r.platform.subscriptions.delete_subscription("acme", sub.subscription_id)
    assert wait(lambda: broker.deliveries[0].status == "dropped")
    assert len(hook.deliveries) == 1 and r.letters(sub) == []


def test_a_dead_letter_is_written_where_and_as_event_grid_writes_it(
    rig: Callable[..., Rig], hook: WebhookReceiver
) -> None:
    r = rig(scale=3600)
    sub = r.subscribe(hook.url)
    hook.answer_status = 400
    broker = r.start()
    refused = event()
    before = datetime.now(UTC)
    broker.accept([refused])
    assert wait(settled(broker))
    after = datetime.now(UTC)
    [(path, items)] = r.letters(sub)
    # <NAME upper-cased>/<year>/<month>/<day>/<hour> (UTC, no zero padding)/<guid>.json, in the platform account.
    stamps = {f"{t.year}/{t.month}/{t.day}/{t.hour}" for t in (before, after)}
    match = re.fullmatch(rf"AIAAS-{sub.subscription_id.upper()}/(\d+/\d+/\d+/\d+)/[0-9a-f]{{32}}\.json", path)
    assert match is not None and match.group(1) in stamps
    assert list(r.platform.blobs.list_containers()) == ["models"]  # nothing in the tenants' account
    [item] = items
    letter = rules.DeadLetter.from_blob_item(item)
    assert letter.event == refused
    assert (letter.reason, letter.delivery_attempts, letter.last_outcome, letter.last_http_status) == (
        rules.CLIENT_ERROR,
        1,
        "BadRequest",
        400,
    )
    assert letter.last_attempt_time and letter.publish_time


@pytest.fixture
def served(rig: Callable[..., Rig]) -> Iterator[tuple[Rig, str]]:
    """A broker's HTTP face on a free loopback port."""
    r = rig(scale=3600)
    broker = r.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(broker.asgi_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait(lambda: server.started, 20)
    yield r, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def test_redeliver_reaches_that_one_subscription_with_the_original_ids(
    served: tuple[Rig, str], hook: WebhookReceiver
) -> None:
    r, base = served
    with WebhookReceiver() as bystander:
        sub = r.subscribe(hook.url)
        r.subscribe(bystander.url)
        again = [event(), event()]
        LocalBrokerRouting(base, KEY, r.secrets).redeliver(sub, again)
        assert wait(lambda: len(hook.events) == 2)
        assert sorted(e["id"] for e in hook.events) == sorted(e.id for e in again)
        assert [d["deliveryCount"] for d in hook.deliveries] == [0, 0]
        assert bystander.requests == []
        assert r.broker is not None and all(d.redelivery for d in r.broker.deliveries)


def test_redeliver_needs_the_key_a_known_subscription_and_the_tenants_events(
    served: tuple[Rig, str], hook: WebhookReceiver
) -> None:
    r, base = served
    sub = r.subscribe(hook.url)
    body = {"tenantId": "acme", "subscriptionId": sub.subscription_id, "events": [event().to_eventgrid()]}
    assert httpx.post(f"{base}/redeliver", json=body).status_code == 401
    assert httpx.post(f"{base}/redeliver", json=body, headers={"aeg-sas-key": "wrong"}).status_code == 401
    auth = {"aeg-sas-key": KEY}
    unknown = {**body, "subscriptionId": "nope"}
    assert httpx.post(f"{base}/redeliver", json=unknown, headers=auth).status_code == 404
    foreign = {**body, "events": [event("globex").to_eventgrid()]}
    answer = httpx.post(f"{base}/redeliver", json=foreign, headers=auth)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "BadRequest"
    assert httpx.post(f"{base}/redeliver", content=b"{", headers=auth).status_code == 400
    assert hook.requests == []
    answer = httpx.post(f"{base}/redeliver", json=body, headers=auth)
    assert answer.status_code == 202 and answer.json() == {"scheduled": 1}
    assert wait(lambda: len(hook.events) == 1)
    listed = httpx.get(f"{base}/deliveries", headers=auth).json()["items"]
    assert [(d["status"], d["attempts"], d["history"][0]["httpStatus"]) for d in listed] == [("delivered", 1, 200)]
    assert httpx.get(f"{base}/deliveries").status_code == 401


def test_a_publish_over_event_grids_limits_is_refused_whole(served: tuple[Rig, str], hook: WebhookReceiver) -> None:
    """Event Grid answers 413 to a publish over 1 MB or 5,000 events and delivers none of it; so does the broker,
    so a publisher that would fail in Azure fails here."""
    r, base = served
    r.subscribe(hook.url)
    auth = {"aeg-sas-key": KEY}
    big = event()
    big = dataclasses.replace(big, data={**big.data, "pad": "x" * (1024 * 1024)})
    answer = httpx.post(f"{base}/api/events", json=[big.to_eventgrid()], headers=auth)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "PayloadTooLarge"
    many = [event().to_eventgrid() for _ in range(5001)]
    assert httpx.post(f"{base}/api/events", json=many, headers=auth).status_code == 413
    assert httpx.post(f"{base}/api/events", json=many[:1], headers=auth).status_code == 200
    assert wait(lambda: len(hook.events) == 1)
    assert r.broker is not None and len(r.broker.deliveries) == 1
