"""The local event broker: Event Grid's publish endpoint (key auth), per-tenant fan-out, retries, dead-letters."""

from __future__ import annotations

import heapq
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.adapters.egress import EgressPolicy, send_bounded
from shared.adapters.webhooks import MAX_DELIVERY_ANSWER_BYTES, TIMEOUTS, delivery_request
from shared.domain.events import PlatformEvent, Subscription
from shared.domain.jobs import utcnow
from shared.services.platform import Platform

logger = logging.getLogger(__name__)
# Event Grid dead-letters these at once instead of retrying (Event Grid delivery and retry: 400, 401, 403, 413).
NO_RETRY_STATUSES = frozenset({400, 401, 403, 413})
# What a delivery that got no HTTP answer records: the same for a refused address, a closed port and a TLS error,
# so that the delivery log tells a tenant nothing about the platform's network (the reason is logged at INFO).
UNREACHABLE = "the endpoint could not be reached"
TIMED_OUT = "the endpoint did not answer in time"


@dataclass
class Delivery:
    event: PlatformEvent
    subscription: Subscription
    attempts: int = 0
    status: str = "pending"
    last_error: str | None = None
    delivered_at: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "eventId": self.event.id,
            "eventType": self.event.event_type,
            "tenantId": self.subscription.tenant_id,
            "subscriptionId": self.subscription.subscription_id,
            "attempts": self.attempts,
            "status": self.status,
            "lastError": self.last_error,
            "deliveredAt": self.delivered_at,
        }


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    delivery: Delivery = field(compare=False)


class LocalEventBroker:
    """Plays an Event Grid domain: topic = tenant, subscriptions read from the platform's SubscriptionStore."""

    def __init__(
        self,
        platform_factory: Callable[[], Platform],
        *,
        key: str,
        max_attempts: int = 8,
        first_retry_seconds: float = 1.0,
        egress: EgressPolicy | None = None,
        connector: httpcore.NetworkBackend | None = None,
    ) -> None:
        """`egress` decides where deliveries may go (default: public addresses only; the local host passes the
        AIAAS_ALLOW_LOOPBACK_ENDPOINTS setting); `connector` replaces the socket layer in tests."""
        self._platform = platform_factory
        self._key = key
        self._max_attempts = max_attempts
        self._first_retry = first_retry_seconds
        self._heap: list[_Due] = []
        self._seq = 0
        self._cv = threading.Condition()
        self.deliveries: list[Delivery] = []
        self._stop = False
        self._client = (egress or EgressPolicy()).client(TIMEOUTS, connector=connector)
        self._threads = [threading.Thread(target=self._run, name=f"broker-{i}", daemon=True) for i in range(4)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._client.close()

    # Publishing side
    def accept(self, events: list[PlatformEvent]) -> int:
        """Fans each event out to its tenant's matching subscriptions.

        An event published twice is delivered twice, as Event Grid does (it keeps no record of the ids it has
        seen): the one terminal event per job is the publisher's to guarantee, and consumers dedupe on the id.
        """
        scheduled = 0
        for event in events:
            for subscription in self._platform().subscriptions.list_subscriptions(event.topic):
                if not subscription.wants(event.event_type):
                    continue
                with self._cv:
                    delivery = Delivery(event, subscription)
                    self.deliveries.append(delivery)
                    self._schedule(delivery, 0.0)
                scheduled += 1
        return scheduled

    def _schedule(self, delivery: Delivery, delay: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Due(time.monotonic() + delay, self._seq, delivery))
        self._cv.notify()

    # Delivery side
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0].at > time.monotonic()):
                    self._cv.wait(timeout=None if not self._heap else max(0.0, self._heap[0].at - time.monotonic()))
                if self._stop:
                    return
                delivery = heapq.heappop(self._heap).delivery
            self._attempt(delivery)

    def _attempt(self, delivery: Delivery) -> None:
        delivery.attempts += 1
        sub = delivery.subscription
        body, headers = delivery_request(
            delivery.event,
            sub.schema,
            subscription_name=sub.subscription_id,
            attempt=delivery.attempts,
            source=f"/tenants/{sub.tenant_id}",
        )
        status = None
        try:
            answer = send_bounded(
                self._client,
                "POST",
                sub.endpoint_url,
                max_bytes=MAX_DELIVERY_ANSWER_BYTES,
                truncate=True,
                content=orjson.dumps(body),
                headers=headers,
            )
            status = answer.status_code
            if 200 <= status < 300:  # a 3xx is a failure: redirects are never followed
                delivery.status, delivery.delivered_at, delivery.last_error = "delivered", utcnow(), None
                return
            delivery.last_error = f"HTTP {status}"
        except httpx.HTTPError as err:
            timed_out = isinstance(err, httpx.TimeoutException)
            delivery.last_error = TIMED_OUT if timed_out else UNREACHABLE
            logger.info("delivery of %s to %s: %s: %s", delivery.event.id, sub.subscription_id, type(err).__name__, err)
        if status in NO_RETRY_STATUSES or delivery.attempts >= self._max_attempts:
            self._dead_letter(delivery)
            return
        delay = min(self._first_retry * 2 ** (delivery.attempts - 1), 300.0)
        logger.info(
            "delivery of %s to %s failed (%s); retry in %.1fs",
            delivery.event.id,
            sub.subscription_id,
            delivery.last_error,
            delay,
        )
        with self._cv:
            delivery.status = "retrying"
            self._schedule(delivery, delay)

    def _dead_letter(self, delivery: Delivery) -> None:
        delivery.status = "dead-lettered"
        sub = delivery.subscription
        path = f"{sub.tenant_id}/{sub.subscription_id}/{delivery.event.id}.json"
        record = {**delivery.view(), "event": delivery.event.to_eventgrid(), "deadLetteredAt": utcnow()}
        try:
            self._platform().blobs.write_bytes(
                "deadletter", path, orjson.dumps(record), content_type="application/json"
            )
        except Exception:
            logger.exception("could not write dead-letter %s", path)
            raise
        logger.warning(
            "event %s dead-lettered for subscription %s: %s",
            delivery.event.id,
            sub.subscription_id,
            delivery.last_error,
        )

    # The HTTP face: Event Grid's publish API, plus a local view of deliveries
    def asgi_app(self) -> Starlette:
        async def publish(request: Request) -> Response:
            if not hmac.compare_digest(request.headers.get("aeg-sas-key", ""), self._key):
                return JSONResponse({"error": {"code": "Unauthorized", "message": "bad aeg-sas-key"}}, 401)
            try:
                raw = orjson.loads(await request.body())
                events = [PlatformEvent.from_eventgrid(item) for item in raw]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                return JSONResponse({"error": {"code": "BadRequest", "message": str(err)}}, 400)
            if any(not event.topic for event in events):
                return JSONResponse({"error": {"code": "BadRequest", "message": "each event needs a topic"}}, 400)
            import anyio.to_thread

            await anyio.to_thread.run_sync(self.accept, events)
            return Response(status_code=200)

        async def deliveries(request: Request) -> Response:
            if not hmac.compare_digest(request.headers.get("aeg-sas-key", ""), self._key):
                return JSONResponse({"error": {"code": "Unauthorized", "message": "bad aeg-sas-key"}}, 401)
            tenant = request.query_params.get("tenant")
            items = [d.view() for d in list(self.deliveries) if not tenant or d.subscription.tenant_id == tenant]
            return JSONResponse({"items": items})

        return Starlette(
            routes=[
                Route("/api/events", publish, methods=["POST"]),
                Route("/deliveries", deliveries, methods=["GET"]),
            ]
        )
