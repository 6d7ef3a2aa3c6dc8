"""Routes of events: subscriptions (`/api/v1/subscriptions`), their dead letters and redelivery, the tenant's event
log (`/api/v1/events`), and the relay Event Grid delivers callback subscriptions' events to (`/api/relay`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from shared.api.auth import AS_ADMIN, AS_READER, Caller
from shared.api.schemas import AUTHED, EventGridEvent, errors
from shared.domain.delivery import RELAY_HEADER
from shared.services import relay, subscriptions
from shared.services.platform import Platform

MAX_TOKEN_CHARS = 4096
MAX_EVENT_ID_CHARS = 128


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    maxDeliveryAttempts: int | None = Field(default=None, description="1-30 (Event Grid's bounds), default 30")
    eventTimeToLiveInMinutes: int | None = Field(default=None, description="1-1440, default 1440")


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    endpointUrl: str | None = Field(
        default=None, min_length=1, max_length=2048, description="a webhook; it must pass the validation handshake"
    )
    callbackUrl: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="a Logic Apps style callback (no handshake; delivered through the platform's relay)",
    )
    eventTypes: list[str] | None = Field(default=None, max_length=50)
    modelNames: list[str] | None = Field(default=None, max_length=100, description="only events of these models")
    schema_: str = Field(default="EventGridSchema", alias="schema")
    retryPolicy: RetryPolicy | None = None
    secret: str | None = Field(
        default=None, max_length=1024, description="webhooks only, 16-256 characters: sent as a header, never shown"
    )


class RetryPolicyView(BaseModel):
    maxDeliveryAttempts: int
    eventTimeToLiveInMinutes: int


class SubscriptionView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    subscriptionId: str
    kind: str
    endpointUrl: str | None = Field(default=None, description="webhooks: where events go (without its query)")
    callbackUrl: str | None = Field(default=None, description="callbacks: where events go (without its query)")
    schema_: str = Field(alias="schema")
    eventTypes: list[str]
    modelNames: list[str] | None
    retryPolicy: RetryPolicyView
    hasSecret: bool
    createdAt: str


class SubscriptionList(BaseModel):
    items: list[SubscriptionView]


class DeadLetterView(BaseModel):
    # Always in the Event Grid schema, whatever the subscription's delivery schema (DeadLetter.view converts).
    event: EventGridEvent
    deadLetterReason: str
    deliveryAttempts: int
    lastDeliveryOutcome: str
    lastHttpStatusCode: int | None
    lastDeliveryAttemptTime: str


class DeadLetterPage(BaseModel):
    items: list[DeadLetterView]
    continuationToken: str | None


class RedeliverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eventIds: list[Annotated[str, Field(min_length=1, max_length=MAX_EVENT_ID_CHARS)]] | None = Field(
        default=None, max_length=subscriptions.MAX_REDELIVERY_EVENTS
    )
    since: str | None = Field(default=None, max_length=40, description="ISO 8601; events from then on")
    until: str | None = Field(default=None, max_length=40, description="ISO 8601; events before then")


class RedeliverAnswer(BaseModel):
    subscriptionId: str
    events: int = Field(description="how many events were scheduled for delivery")
    notFound: list[str] = Field(description="eventIds that are not in the tenant's event log")


class EventPage(BaseModel):
    items: list[EventGridEvent]
    continuationToken: str | None


def _subscription_id(value: str) -> str:
    from shared.api.app import existing_id  # app imports this module inside create_app: no cycle at import

    return existing_id("subscription", value)


def event_router(
    platform_dep: Any,
    *,
    allow_loopback: bool = False,
    relay_key: str | None = None,
    relay_timeout_seconds: float = relay.RELAY_TIMEOUT_SECONDS,
) -> APIRouter:
    """`platform_dep` is the API's Depends() marker of the Platform; `allow_loopback` lets webhooks and callbacks be
    on loopback (development only); `relay_key` is the key the relay header is derived from (None: the relay
    refuses every delivery); the relay waits `relay_timeout_seconds` at most for a callback."""
    router = APIRouter(tags=["Events"])

    @router.post(
        "/api/v1/subscriptions",
        status_code=201,
        response_model=SubscriptionView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 409),
    )
    def create_subscription(
        body: SubscriptionRequest, response: Response, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN
    ) -> dict[str, Any]:
        retry = body.retryPolicy or RetryPolicy()
        created = subscriptions.create_subscription(
            plat,
            tenant.tenant_id,
            body.endpointUrl,
            callback_url=body.callbackUrl,
            schema=body.schema_,
            event_types=body.eventTypes,
            model_names=body.modelNames,
            max_delivery_attempts=retry.maxDeliveryAttempts,
            event_ttl_minutes=retry.eventTimeToLiveInMinutes,
            secret=body.secret,
            allow_loopback_http=allow_loopback,
        )
        # Absolute (the Logic Apps webhook protocol DELETEs exactly this URL), from the public API URL, never Host.
        response.headers["Location"] = f"{plat.api_url.rstrip('/')}/v1/subscriptions/{created.subscription_id}"
        return created.public_view()

    @router.get(
        "/api/v1/subscriptions",
        response_model=SubscriptionList,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED),
    )
    def list_subscriptions(plat: Platform = platform_dep, tenant: Caller = AS_READER) -> dict[str, Any]:
        return {"items": [s.public_view() for s in plat.subscriptions.list_subscriptions(tenant.tenant_id)]}

    @router.get(
        "/api/v1/subscriptions/{subscription_id}",
        response_model=SubscriptionView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404),
    )
    def get_subscription(
        subscription_id: str, plat: Platform = platform_dep, tenant: Caller = AS_READER
    ) -> dict[str, Any]:
        return plat.subscriptions.get_subscription(tenant.tenant_id, _subscription_id(subscription_id)).public_view()

    @router.delete("/api/v1/subscriptions/{subscription_id}", status_code=204, responses=errors(*AUTHED, 404))
    def delete_subscription(subscription_id: str, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN) -> Response:
        subscriptions.delete_subscription(plat, tenant.tenant_id, _subscription_id(subscription_id))
        return Response(status_code=204)

    @router.get(
        "/api/v1/subscriptions/{subscription_id}/deadletters",
        response_model=DeadLetterPage,
        responses=errors(*AUTHED, 404),
    )
    def list_dead_letters(
        subscription_id: str,
        plat: Platform = platform_dep,
        tenant: Caller = AS_READER,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        continuationToken: Annotated[str | None, Query(max_length=MAX_TOKEN_CHARS)] = None,
    ) -> dict[str, Any]:
        return subscriptions.list_dead_letters(
            plat, tenant.tenant_id, _subscription_id(subscription_id), limit=limit, continuation=continuationToken
        )

    @router.post(
        "/api/v1/subscriptions/{subscription_id}/redeliver",
        status_code=202,
        response_model=RedeliverAnswer,
        responses=errors(*AUTHED, 404),
    )
    def redeliver_subscription(
        subscription_id: str, body: RedeliverRequest, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN
    ) -> dict[str, Any]:
        return subscriptions.redeliver(
            plat,
            tenant.tenant_id,
            _subscription_id(subscription_id),
            event_ids=body.eventIds,
            since=body.since,
            until=body.until,
        )

    @router.get("/api/v1/events", response_model=EventPage, responses=errors(*AUTHED))
    def list_events(
        plat: Platform = platform_dep,
        tenant: Caller = AS_READER,
        since: Annotated[str | None, Query(max_length=40, description="ISO 8601; events from then on")] = None,
        until: Annotated[str | None, Query(max_length=40, description="ISO 8601; events before then")] = None,
        type: Annotated[str | None, Query(max_length=128, description="only this event type")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        continuationToken: Annotated[str | None, Query(max_length=MAX_TOKEN_CHARS)] = None,
    ) -> dict[str, Any]:
        """The tenant's published events, newest first (kept at least 30 days)."""
        return subscriptions.list_events(
            plat,
            tenant.tenant_id,
            since=since,
            until=until,
            event_type=type,
            limit=limit,
            continuation=continuationToken,
        )

    # The relay: public (Event Grid calls it, with no tenant credential), authenticated by the subscription's own
    # relay header; not part of the tenant's API, so not in its OpenAPI document.

    @router.options("/api/relay/{tenant_id}/{subscription_id}", include_in_schema=False)
    def relay_abuse_protection(tenant_id: str, subscription_id: str, request: Request) -> Response:
        return _answer(relay.abuse_protection_answer(request.headers.get("webhook-request-origin")))

    @router.post("/api/relay/{tenant_id}/{subscription_id}", include_in_schema=False)
    async def relay_event(
        tenant_id: str, subscription_id: str, request: Request, plat: Platform = platform_dep
    ) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > relay.MAX_RELAY_BODY_BYTES:
                too_large = {"error": {"code": "TooLarge", "message": "the delivery is too large"}}
                return _answer(relay.RelayAnswer(413, too_large))
        validation = relay.validation_answer(request.headers.get("aeg-event-type"), bytes(body))
        if validation is not None:
            return _answer(validation)
        relay.check_relay_key(relay_key or "", tenant_id, subscription_id, request.headers.get(RELAY_HEADER))
        answer = await run_in_threadpool(
            relay.relay_delivery,
            plat,
            tenant_id,
            subscription_id,
            bytes(body),
            {name.lower(): value for name, value in request.headers.items()},
            allow_loopback=allow_loopback,
            timeout_seconds=relay_timeout_seconds,
        )
        return _answer(answer)

    return router


def _answer(answer: relay.RelayAnswer) -> Response:
    if answer.body is None:
        return Response(status_code=answer.status, headers=answer.headers)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
