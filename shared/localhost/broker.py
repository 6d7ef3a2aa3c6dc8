"""The local event broker: an Event Grid domain with Event Grid's delivery rules (retries, TTL, dead letters)."""

from __future__ import annotations

import collections
import heapq
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpcore
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.adapters.egress import EgressPolicy, Timeouts, send_bounded
from shared.adapters.webhooks import MAX_DELIVERY_ANSWER_BYTES, delivery_request
from shared.domain import delivery as rules
from shared.domain.errors import NotFound
from shared.domain.events import PlatformEvent, Subscription
from shared.domain.jobs import utcnow
from shared.ports import BlobStore, SecretStore, SubscriptionStore

logger = logging.getLogger(__name__)
# What a delivery that got no HTTP answer records: the same for a refused address, a closed port and a TLS error,
# so that the delivery log tells a tenant nothing about the platform's network (the reason is logged at INFO).
UNREACHABLE = "the endpoint could not be reached"
TIMED_OUT = "the endpoint did not answer in time"
# Event Grid writes a dead letter about five minutes after the last attempt, to save Blob operations (Event Grid
# "Delivery and retry", dead-letter events); scaled like every other delay.
DEAD_LETTER_DELAY_SECONDS = 300.0
# Deliveries run on this many threads (each waits at most the answer timeout), whatever the backlog.
DELIVERY_THREADS = 4
# The /deliveries view keeps the newest deliveries only (pending ones stay scheduled whether shown or not).
KEPT_DELIVERIES = 10_000
# A publish or redelivery request body the broker reads at most (Event Grid: 1 MB per publish request).
MAX_REQUEST_BYTES = 1024 * 1024
# Events per publish request (Event Grid quotas: 5,000), refused whole with 413 as Event Grid does.
MAX_EVENTS_PER_REQUEST = 5000
# The store or the dead-letter container failing is not the event's fault: try again after this (unscaled).
STORE_RETRY_SECONDS = 1.0


class _SubscriptionSource(Protocol):
    subscriptions: SubscriptionStore


@dataclass
class Attempt:
    """One POST the broker made for a delivery, as the endpoint saw it (aeg-delivery-count) and answered."""

    delivery_count: int
    at: str
    status: int | None
    outcome: str
    # Scaled seconds until the next attempt, when one was scheduled.
    retry_in: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "deliveryCount": self.delivery_count,
            "at": self.at,
            "httpStatus": self.status,
            "outcome": self.outcome,
            "retryInSeconds": self.retry_in,
        }


@dataclass
class Delivery:
    """One event on its way to one subscription (Event Grid keeps one of these per event and subscription)."""

    event: PlatformEvent
    subscription: Subscription
    accepted_at: float  # time.monotonic() when the broker took the event: the time to live counts from here
    accepted_utc: str = field(default_factory=utcnow)
    redelivery: bool = False
    status: str = "pending"  # pending, retrying, delivered, dead-lettering, dead-lettered, dropped
    last_error: str | None = None
    delivered_at: str | None = None
    dead_letter_reason: str | None = None
    dead_letter_blob: str | None = None
    history: list[Attempt] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.history)

    def view(self) -> dict[str, Any]:
        return {
            "eventId": self.event.id,
            "eventType": self.event.event_type,
            "tenantId": self.subscription.tenant_id,
            "subscriptionId": self.subscription.subscription_id,
            "redelivery": self.redelivery,
            "attempts": self.attempts,
            "status": self.status,
            "lastError": self.last_error,
            "deliveredAt": self.delivered_at,
            "deadLetterReason": self.dead_letter_reason,
            "deadLetterBlob": self.dead_letter_blob,
            "history": [attempt.view() for attempt in self.history],
        }


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    delivery: Delivery = field(compare=False)
    dead_letter: bool = field(default=False, compare=False)


class LocalEventBroker:
    """Plays an Event Grid domain: topic = tenant, subscriptions read from the platform's SubscriptionStore, and
    Event Grid's delivery rules (shared.domain.delivery) on a clock `time_scale` times faster."""

    def __init__(
        self,
        platform_factory: Callable[[], _SubscriptionSource],
        *,
        key: str,
        dead_letters: BlobStore,
        deadletter_container: str = "deadletter",
        secrets: SecretStore | None = None,
        api_url: str = "",
        relay_master_key: str = "",
        time_scale: float = 1.0,
        timeout_seconds: float = rules.DELIVERY_TIMEOUT_SECONDS,
        egress: EgressPolicy | None = None,
        connector: httpcore.NetworkBackend | None = None,
        threads: int = DELIVERY_THREADS,
    ) -> None:
        """`dead_letters` is the platform storage account's BlobStore (never the tenants' account); `api_url` and
        `relay_master_key` make the relay target and header of callback subscriptions; `egress` decides where
        tenants' endpoints may be (default: public addresses only); `connector` replaces the socket layer in tests."""
        self._platform = platform_factory
        self._key = key
        self._dead_letters = dead_letters
        self._container = deadletter_container
        self._secrets = secrets
        self._api_url = api_url
        self._relay_master_key = relay_master_key
        self._scale = max(1.0, time_scale)
        self._timeout = min(max(timeout_seconds, 0.1), rules.DELIVERY_TIMEOUT_SECONDS)
        self._heap: list[_Due] = []
        self._seq = 0
        self._cv = threading.Condition()
        self.deliveries: collections.deque[Delivery] = collections.deque(maxlen=KEPT_DELIVERIES)
        self._stop = False
        timeouts = Timeouts(connect=min(5.0, self._timeout), read=self._timeout, total=self._timeout)
        self._client = (egress or EgressPolicy()).client(timeouts, connector=connector)
        # The relay is the platform's own API (public_api_url, loopback locally), not a tenant's endpoint.
        self._relay_client = EgressPolicy(allow_loopback=True).client(timeouts, connector=connector)
        self._threads = [
            threading.Thread(target=self._run, name=f"broker-{i}", daemon=True) for i in range(max(1, threads))
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=self._timeout + 5)
        self._client.close()
        self._relay_client.close()

    def _scaled(self, seconds: float) -> float:
        return seconds / self._scale

    # Publishing side
    def accept(self, events: list[PlatformEvent]) -> int:
        """Fans each event out to its tenant's subscriptions whose filters match; returns the deliveries made.

        An event published twice is delivered twice, as Event Grid does (it keeps no record of the ids it has
        seen): the one terminal event per job is the publisher's to guarantee, and consumers dedupe on the id.
        """
        scheduled = 0
        for event in events:
            for subscription in self._platform().subscriptions.list_subscriptions(event.topic):
                if subscription.matches(event):
                    self._enqueue(Delivery(event, subscription, accepted_at=time.monotonic()))
                    scheduled += 1
        return scheduled

    def redeliver(self, subscription: Subscription, events: list[PlatformEvent]) -> int:
        """Schedules these events to this one subscription, with fresh attempts and time to live (their ids
        unchanged), as a publish to the subscription's own redelivery topic does in Azure."""
        for event in events:
            self._enqueue(Delivery(event, subscription, accepted_at=time.monotonic(), redelivery=True))
        return len(events)

    def _enqueue(self, delivery: Delivery) -> None:
        with self._cv:
            self.deliveries.append(delivery)
            self._schedule(delivery, 0.0)

    def _schedule(self, delivery: Delivery, delay: float, *, dead_letter: bool = False) -> None:
        """Caller holds self._cv."""
        self._seq += 1
        heapq.heappush(self._heap, _Due(time.monotonic() + delay, self._seq, delivery, dead_letter))
        self._cv.notify()

    def _later(self, delivery: Delivery, delay: float, *, dead_letter: bool = False) -> None:
        with self._cv:
            self._schedule(delivery, delay, dead_letter=dead_letter)

    # Delivery side
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0].at > time.monotonic()):
                    self._cv.wait(timeout=None if not self._heap else max(0.0, self._heap[0].at - time.monotonic()))
                if self._stop:
                    return
                due = heapq.heappop(self._heap)
            try:
                if due.dead_letter:
                    self._write_dead_letter(due.delivery)
                else:
                    self._attempt(due.delivery)
            except Exception:  # never lose an event to a bug or an outage: log it and try again later
                logger.exception("delivery of event %s failed unexpectedly; trying again", due.delivery.event.id)
                self._later(due.delivery, STORE_RETRY_SECONDS, dead_letter=due.dead_letter)

    def _current(self, delivery: Delivery) -> Subscription | None:
        """The subscription as it is now (None: deleted, so its deliveries stop, as when Event Grid's event
        subscription is deleted)."""
        sub = delivery.subscription
        try:
            current = self._platform().subscriptions.get_subscription(sub.tenant_id, sub.subscription_id)
        except NotFound:
            delivery.status = "dropped"
            logger.info(
                "subscription %s was deleted: event %s is not delivered to it",
                sub.subscription_id,
                delivery.event.id,
                extra={"tenant_id": sub.tenant_id},
            )
            return None
        delivery.subscription = current
        return current

    def _target(self, sub: Subscription) -> tuple[str, dict[str, str], httpx.Client]:
        """Where a delivery goes and the static headers it carries: a webhook's endpoint (with its secret), or
        the platform's relay for a callback (with the per-subscription relay key), as in Azure."""
        headers: dict[str, str] = {}
        if sub.has_secret and self._secrets is not None:
            try:
                headers[rules.SECRET_HEADER] = self._secrets.get(sub.tenant_id, f"subscription-{sub.subscription_id}")
            except NotFound:
                logger.warning("subscription %s has a secret but none is stored", sub.subscription_id)
        if sub.kind == "callback":
            headers[rules.RELAY_HEADER] = rules.relay_key(self._relay_master_key, sub.tenant_id, sub.subscription_id)
            return rules.relay_url(self._api_url, sub.tenant_id, sub.subscription_id), headers, self._relay_client
        return sub.endpoint_url, headers, self._client

    def _attempt(self, delivery: Delivery) -> None:
        sub = self._current(delivery)
        if sub is None:
            return
        url, static_headers, client = self._target(sub)
        body, headers = delivery_request(
            delivery.event,
            sub.schema,
            subscription_name=rules.eventgrid_subscription_name(sub.subscription_id).upper(),
            attempt=delivery.attempts + 1,
            source=f"/tenants/{sub.tenant_id}",
        )
        headers.update(static_headers)
        status: int | None = None
        timed_out = False
        started = utcnow()
        try:
            answer = send_bounded(
                client,
                "POST",
                url,
                max_bytes=MAX_DELIVERY_ANSWER_BYTES,
                total_seconds=self._timeout,
                truncate=True,
                content=orjson.dumps(body),
                headers=headers,
            )
            status = answer.status_code
            delivery.last_error = None if rules.is_delivered(status) else f"HTTP {status}"
        except httpx.HTTPError as err:
            timed_out = isinstance(err, httpx.TimeoutException)
            delivery.last_error = TIMED_OUT if timed_out else UNREACHABLE
            logger.info("delivery of %s to %s: %s: %s", delivery.event.id, sub.subscription_id, type(err).__name__, err)
        attempt = Attempt(
            delivery_count=delivery.attempts,
            at=started,
            status=status,
            outcome=rules.delivery_outcome(status, timed_out=timed_out),
        )
        delivery.history.append(attempt)
        if rules.is_delivered(status):
            delivery.status, delivery.delivered_at = "delivered", utcnow()
            return
        reason = self._gives_up(delivery, sub, status, attempt)
        if reason is not None:
            delivery.status, delivery.dead_letter_reason = "dead-lettering", reason
            logger.info(
                "event %s to subscription %s: %s after %d attempts; dead-lettering",
                delivery.event.id,
                sub.subscription_id,
                reason,
                delivery.attempts,
            )
            self._later(delivery, self._scaled(DEAD_LETTER_DELAY_SECONDS), dead_letter=True)
            return
        delivery.status = "retrying"
        logger.info(
            "delivery of %s to %s failed (%s); retry in %.3fs",
            delivery.event.id,
            sub.subscription_id,
            delivery.last_error,
            attempt.retry_in,
        )
        self._later(delivery, attempt.retry_in or 0.0)

    def _gives_up(self, delivery: Delivery, sub: Subscription, status: int | None, attempt: Attempt) -> str | None:
        """Event Grid's decision after a failed attempt: the dead-letter reason, or None (the retry is then set in
        `attempt.retry_in`). A retry that would come after the event's time to live is not scheduled."""
        if not rules.is_retried(status):
            return rules.CLIENT_ERROR
        if delivery.attempts >= sub.max_delivery_attempts:
            return rules.MAX_ATTEMPTS_EXCEEDED
        delay = self._scaled(rules.retry_delay(delivery.attempts))
        expires = delivery.accepted_at + self._scaled(sub.event_ttl_minutes * 60.0)
        if time.monotonic() + delay > expires:
            return rules.TTL_EXCEEDED
        attempt.retry_in = delay
        return None

    def _write_dead_letter(self, delivery: Delivery) -> None:
        """Writes the dead letter where and as Event Grid does: a JSON array in the platform account's dead-letter
        container, under the subscription's upper-cased name and the UTC date and hour."""
        sub = self._current(delivery)
        if sub is None:
            return
        last = delivery.history[-1]
        letter = rules.DeadLetter(
            event=delivery.event,
            reason=delivery.dead_letter_reason or rules.MAX_ATTEMPTS_EXCEEDED,
            delivery_attempts=delivery.attempts,
            last_outcome=last.outcome,
            last_http_status=last.status,
            last_attempt_time=last.at,
            publish_time=delivery.accepted_utc,
        )
        path = rules.dead_letter_blob_path(
            rules.eventgrid_subscription_name(sub.subscription_id), datetime.now(UTC), uuid.uuid4().hex
        )
        self._dead_letters.write_bytes(
            self._container, path, orjson.dumps([letter.to_blob_item()]), content_type="application/json"
        )
        delivery.status, delivery.dead_letter_blob = "dead-lettered", path
        logger.warning(
            "event %s dead-lettered for subscription %s: %s (%s)",
            delivery.event.id,
            sub.subscription_id,
            letter.reason,
            delivery.last_error,
            extra={"tenant_id": sub.tenant_id},
        )

    # The HTTP face: Event Grid's publish API, redelivery to one subscription, and a local view of deliveries
    def _authorized(self, request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("aeg-sas-key", "").encode(), self._key.encode())

    def asgi_app(self) -> Starlette:
        import anyio.to_thread

        def error(status: int, code: str, message: str) -> Response:
            return JSONResponse({"error": {"code": code, "message": message}}, status)

        class TooLarge(Exception):
            pass

        async def read_json(request: Request) -> Any:
            body = await request.body()
            if len(body) > MAX_REQUEST_BYTES:
                raise TooLarge(f"the body exceeds {MAX_REQUEST_BYTES} bytes")
            return orjson.loads(body)

        async def publish(request: Request) -> Response:
            if not self._authorized(request):
                return error(401, "Unauthorized", "bad aeg-sas-key")
            try:
                raw = await read_json(request)
                events = [PlatformEvent.from_eventgrid(item) for item in raw]
            except TooLarge as err:  # Event Grid answers a publish over 1 MB with 413, and accepts none of it
                return error(413, "PayloadTooLarge", str(err))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                return error(400, "BadRequest", str(err))
            if len(events) > MAX_EVENTS_PER_REQUEST:
                return error(413, "PayloadTooLarge", f"at most {MAX_EVENTS_PER_REQUEST} events per request")
            if any(not event.topic for event in events):
                return error(400, "BadRequest", "each event needs a topic")
            await anyio.to_thread.run_sync(self.accept, events)
            return Response(status_code=200)

        async def redeliver(request: Request) -> Response:
            if not self._authorized(request):
                return error(401, "Unauthorized", "bad aeg-sas-key")
            try:
                raw = await read_json(request)
                tenant, sub_id = str(raw["tenantId"]), str(raw["subscriptionId"])
                events = [PlatformEvent.from_eventgrid(item) for item in raw["events"]]
            except TooLarge as err:
                return error(413, "PayloadTooLarge", str(err))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                return error(400, "BadRequest", f"expected tenantId, subscriptionId and events: {err}")
            if any(event.topic != tenant for event in events):
                return error(400, "BadRequest", "every event must be the tenant's (topic = tenantId)")

            def schedule() -> int | None:
                try:
                    sub = self._platform().subscriptions.get_subscription(tenant, sub_id)
                except NotFound:
                    return None
                return self.redeliver(sub, events)

            scheduled = await anyio.to_thread.run_sync(schedule)
            if scheduled is None:
                return error(404, "NotFound", f"subscription {sub_id} not found")
            return JSONResponse({"scheduled": scheduled}, 202)

        async def deliveries(request: Request) -> Response:
            if not self._authorized(request):
                return error(401, "Unauthorized", "bad aeg-sas-key")
            tenant = request.query_params.get("tenant")
            with self._cv:
                kept = list(self.deliveries)
            items = [d.view() for d in kept if not tenant or d.subscription.tenant_id == tenant]
            return JSONResponse({"items": items})

        return Starlette(
            routes=[
                Route("/api/events", publish, methods=["POST"]),
                Route("/redeliver", redeliver, methods=["POST"]),
                Route("/deliveries", deliveries, methods=["GET"]),
            ]
        )
