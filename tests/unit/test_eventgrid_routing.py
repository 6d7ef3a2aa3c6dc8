"""EventGridRouting against the SDKs' own requests: a real EventGridManagementClient and EventGridPublisherClient
whose azure-core transport records every HttpRequest and answers with canned ARM / Event Grid JSON (no Event Grid
domain is reachable from here)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.eventgrid._legacy import EventGridPublisherClient as LegacyPublisherClient

from shared.adapters.eventgrid_routing import (
    PUBLISH_REQUEST_BYTES,
    PUBLISH_REQUEST_EVENTS,
    EventGridRouting,
    parse_domain_id,
    publish_batches,
)
from shared.domain.delivery import RELAY_HEADER, SECRET_HEADER, redelivery_topic, relay_key
from shared.domain.egress import ENDPOINT_VALIDATION_FAILED
from shared.domain.errors import InvalidInput, ServiceUnavailable
from shared.domain.events import PlatformEvent, Subscription
from tests.sdk_transport import Answer, FakeCredential, RecordingTransport

AZ_SUB = "00000000-0000-0000-0000-000000000000"
DOMAIN_ID = f"/subscriptions/{AZ_SUB}/resourceGroups/rg-aiaas/providers/Microsoft.EventGrid/domains/evgd-x"
DOMAIN_PATH = f"/subscriptions/{AZ_SUB}/resourceGroups/rg-aiaas/providers/Microsoft.EventGrid/domains/evgd-x"
ENDPOINT = "https://evgd-x.westeurope-1.eventgrid.azure.net/api/events"
PLATFORM_ACCOUNT = f"/subscriptions/{AZ_SUB}/resourceGroups/rg-aiaas/providers/Microsoft.Storage/storageAccounts/stpx"
API = "https://func-x.azurewebsites.net/api"
RELAY_MASTER = "relay-master-key-of-the-stamp"
SECRET = "s3cret-of-the-tenant-0123"
OPERATION = "https://management.azure.com/subscriptions/x/providers/Microsoft.EventGrid/operationsStatus/op1"


class FakeEventGrid:
    """Answers ARM like Event Grid: a PUT is created at once (201 + Succeeded) unless told otherwise per topic;
    a DELETE answers 200, or 404 for what was never created; a publish answers 200."""

    def __init__(self) -> None:
        self.existing: set[str] = set()
        self.fail_put: dict[str, Answer] = {}  # topic -> the answer to its PUT
        self.async_failure: dict[str, Any] | None = None  # the operation's error when PUTs go asynchronous
        self.fail_delete: Answer | None = None
        self.fail_publish: Answer | None = None

    def __call__(self, request: requests.PreparedRequest) -> Answer:
        url = urlsplit(request.url or "")
        if url.hostname == urlsplit(ENDPOINT).hostname:
            return self.fail_publish or (200, {})
        if url.path == urlsplit(OPERATION).path:
            return 200, {"status": "Failed", "error": self.async_failure}
        topic = url.path.split("/topics/", 1)[1].split("/", 1)[0]
        if request.method == "PUT":
            if topic in self.fail_put:
                return self.fail_put[topic]
            if self.async_failure is not None:
                self.existing.add(url.path)
                headers = {"Azure-AsyncOperation": f"{OPERATION}?api-version=2025-02-15", "Retry-After": "0"}
                return 201, {"properties": {"provisioningState": "Creating"}}, headers
            self.existing.add(url.path)
            body = json.loads(request.body or "{}")
            return 201, {
                **body,
                "name": url.path.rsplit("/", 1)[1],
                "properties": {**body["properties"], "provisioningState": "Succeeded"},
            }
        if request.method == "DELETE":
            if self.fail_delete:
                return self.fail_delete
            if url.path not in self.existing:
                return 404, {"error": {"code": "ResourceNotFound", "message": "not found"}}
            self.existing.discard(url.path)
            return 200, {}
        raise AssertionError(f"unexpected {request.method} {request.url}")


@pytest.fixture
def grid() -> FakeEventGrid:
    return FakeEventGrid()


def routing(grid: FakeEventGrid) -> tuple[EventGridRouting, RecordingTransport, FakeCredential]:
    transport = RecordingTransport(grid)
    credential = FakeCredential()
    # The client the public EventGridPublisherClient wraps for a basic-tier domain, which alone takes a transport.
    # No SDK retries: an answer is final here (the clients' own retry policy is azure-core's, untouched in Azure).
    publisher = LegacyPublisherClient(ENDPOINT, credential, transport=transport, retry_total=0)
    route = EventGridRouting(
        DOMAIN_ID,
        credential,
        publish_endpoint=ENDPOINT,
        deadletter_account_id=PLATFORM_ACCOUNT,
        deadletter_container="deadletter",
        api_url=API,
        relay_key=RELAY_MASTER,
        client_options={"transport": transport, "retry_total": 0},
        publisher=publisher,
    )
    return route, transport, credential


def webhook(**overrides: Any) -> Subscription:
    fields: dict[str, Any] = {
        "tenant_id": "acme",
        "subscription_id": "sub-1",
        "endpoint_url": "https://hooks.acme.example/aiaas",
        "model_names": ["churn", "sentiment"],
        "event_types": ["AIaaS.Job.Succeeded", "AIaaS.Job.Failed"],
        "max_delivery_attempts": 12,
        "event_ttl_minutes": 360,
        "has_secret": True,
    }
    return Subscription(**{**fields, **overrides})


def path_of(request: Any) -> str:
    return urlsplit(request.url).path


def api_version(request: Any) -> list[str]:
    return parse_qs(urlsplit(request.url).query)["api-version"]


def topic_path(topic: str, name: str = "aiaas-sub-1") -> str:
    return f"{DOMAIN_PATH}/topics/{topic}/eventSubscriptions/{name}"


TWIN = redelivery_topic("acme", "sub-1")
DEAD_LETTERS = {
    "identity": {"type": "SystemAssigned"},
    "deadLetterDestination": {
        "endpointType": "StorageBlob",
        "properties": {"resourceId": PLATFORM_ACCOUNT, "blobContainerName": "deadletter"},
    },
}


def test_a_webhook_route_is_two_event_subscriptions_with_the_tenants_filters_and_secret(grid: FakeEventGrid) -> None:
    route, transport, credential = routing(grid)
    route.create_route(webhook(), secret=SECRET)

    first, twin = transport.requests
    assert [r.method for r in (first, twin)] == ["PUT", "PUT"]
    assert path_of(first) == topic_path("acme") and path_of(twin) == topic_path(TWIN)
    assert api_version(first) == api_version(twin) == ["2025-02-15"]
    assert first.headers["Authorization"] == "Bearer test-token"
    assert credential.scopes[0] == ("https://management.azure.com/.default",)
    body = json.loads(first.body)
    assert json.loads(twin.body) == body  # the twin delivers the same way, to the same place
    assert body == {
        "properties": {
            "destination": {
                "endpointType": "WebHook",
                "properties": {
                    "endpointUrl": "https://hooks.acme.example/aiaas",
                    "maxEventsPerBatch": 1,
                    "preferredBatchSizeInKilobytes": 64,
                    "deliveryAttributeMappings": [
                        {"name": SECRET_HEADER, "type": "Static", "properties": {"value": SECRET, "isSecret": True}}
                    ],
                },
            },
            "filter": {
                "includedEventTypes": ["AIaaS.Job.Succeeded", "AIaaS.Job.Failed"],
                "isSubjectCaseSensitive": False,
                "advancedFilters": [
                    {"operatorType": "StringIn", "key": "data.model.name", "values": ["churn", "sentiment"]}
                ],
            },
            "eventDeliverySchema": "EventGridSchema",
            "retryPolicy": {"maxDeliveryAttempts": 12, "eventTimeToLiveInMinutes": 360},
            "deadLetterWithResourceIdentity": DEAD_LETTERS,
        }
    }


def test_a_callback_route_delivers_to_the_relay_with_its_own_key_and_no_filter_it_did_not_ask_for(
    grid: FakeEventGrid,
) -> None:
    route, transport, _ = routing(grid)
    callback = webhook(
        kind="callback",
        endpoint_url="https://prod-01.westeurope.logic.azure.com/workflows/w/triggers/t/paths/invoke?sig=abc",
        model_names=None,
        schema="CloudEventSchemaV1_0",
        has_secret=False,
    )
    route.create_route(callback)

    assert [path_of(r) for r in transport.requests] == [topic_path("acme"), topic_path(TWIN)]
    properties = json.loads(transport.requests[0].body)["properties"]
    destination = properties["destination"]["properties"]
    # Event Grid never sees the callback URL (nor its sig): it delivers to the platform's relay.
    assert destination["endpointUrl"] == f"{API}/relay/acme/sub-1"
    assert destination["deliveryAttributeMappings"] == [
        {
            "name": RELAY_HEADER,
            "type": "Static",
            "properties": {"value": relay_key(RELAY_MASTER, "acme", "sub-1"), "isSecret": True},
        }
    ]
    assert "logic.azure.com" not in transport.requests[0].body
    assert "advancedFilters" not in properties["filter"]
    assert properties["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    assert properties["deadLetterWithResourceIdentity"] == DEAD_LETTERS


def test_a_webhook_without_a_secret_gets_no_header(grid: FakeEventGrid) -> None:
    route, transport, _ = routing(grid)
    route.create_route(webhook(has_secret=False))
    destination = json.loads(transport.requests[0].body)["properties"]["destination"]["properties"]
    assert "deliveryAttributeMappings" not in destination


def test_a_subscription_with_a_secret_is_not_written_again_without_it(grid: FakeEventGrid) -> None:
    route, transport, _ = routing(grid)
    with pytest.raises(ValueError):
        route.create_route(webhook())
    assert transport.requests == []


def test_delete_removes_both_and_what_is_gone_already_is_fine(grid: FakeEventGrid) -> None:
    route, transport, _ = routing(grid)
    route.create_route(webhook(), secret=SECRET)
    transport.requests.clear()

    route.delete_route(webhook())
    assert [(r.method, path_of(r)) for r in transport.requests] == [
        ("DELETE", topic_path("acme")),
        ("DELETE", topic_path(TWIN)),
    ]
    assert all(api_version(r) == ["2025-02-15"] for r in transport.requests)
    assert grid.existing == set()
    route.delete_route(webhook())  # both answer 404 now: still done
    assert len(transport.requests) == 4


def test_an_endpoint_that_fails_event_grids_validation_is_a_400_and_leaves_no_half_route(grid: FakeEventGrid) -> None:
    route, transport, _ = routing(grid)
    grid.async_failure = {
        "code": "Url validation",
        "message": "Webhook validation handshake failed for https://hooks.acme.example/aiaas. Http POST request "
        "failed with response code Unknown. For troubleshooting, visit https://aka.ms/esvalidation.",
    }
    with pytest.raises(InvalidInput) as raised:
        route.create_route(webhook(), secret=SECRET)
    assert raised.value.code == ENDPOINT_VALIDATION_FAILED
    assert "acme.example" not in raised.value.message  # the one generic message, whatever Event Grid said
    methods = [(r.method, path_of(r)) for r in transport.requests]
    assert methods[0] == ("PUT", topic_path("acme")) and methods[-1] == ("DELETE", topic_path("acme"))
    assert grid.existing == set()


def test_a_validation_refused_on_the_put_itself_is_a_400_too(grid: FakeEventGrid) -> None:
    route, _, _ = routing(grid)
    grid.fail_put["acme"] = (
        400,
        {"error": {"code": "InvalidRequest", "message": "The attempt to validate the provided endpoint failed."}},
    )
    with pytest.raises(InvalidInput) as raised:
        route.create_route(webhook(), secret=SECRET)
    assert raised.value.code == ENDPOINT_VALIDATION_FAILED


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"error": {"code": "InternalServerError", "message": "try later"}}),
        (429, {"error": {"code": "TooManyRequests", "message": "throttled"}}),
        (403, {"error": {"code": "AuthorizationFailed", "message": "the identity may not"}}),
    ],
)
def test_any_other_failure_is_service_unavailable_and_the_first_half_is_removed(
    grid: FakeEventGrid, answer: Answer
) -> None:
    route, transport, _ = routing(grid)
    grid.fail_put[TWIN] = answer
    with pytest.raises(ServiceUnavailable):
        route.create_route(webhook(), secret=SECRET)
    assert ("DELETE", topic_path("acme")) in [(r.method, path_of(r)) for r in transport.requests]
    assert grid.existing == set()


def test_a_delete_event_grid_refuses_is_service_unavailable(grid: FakeEventGrid) -> None:
    route, _, _ = routing(grid)
    grid.fail_delete = (500, {"error": {"code": "InternalServerError", "message": "try later"}})
    with pytest.raises(ServiceUnavailable):
        route.delete_route(webhook())


def event(n: int, *, size: int = 10) -> PlatformEvent:
    return PlatformEvent(
        id=f"evt-{n:05d}",
        event_type="AIaaS.Job.Succeeded",
        subject=f"/tenants/acme/jobs/job-{n}",
        data={"jobId": f"job-{n}", "model": {"name": "churn", "version": "1"}, "pad": "x" * size},
        event_time="2026-12-01T10:00:00Z",
        topic="acme",
    )


def published(transport: RecordingTransport) -> list[list[dict[str, Any]]]:
    return [json.loads(r.body) for r in transport.requests if r.method == "POST"]


def test_redelivery_publishes_the_original_ids_to_the_subscriptions_own_topic(grid: FakeEventGrid) -> None:
    route, transport, credential = routing(grid)
    events = [event(1), event(2), event(3)]
    route.redeliver(webhook(), events)

    (post,) = transport.requests
    assert post.method == "POST" and post.url.split("?")[0] == ENDPOINT
    assert post.headers["Authorization"] == "Bearer test-token"
    assert ("https://eventgrid.azure.net/.default",) in credential.scopes
    (batch,) = published(transport)
    assert [e["id"] for e in batch] == ["evt-00001", "evt-00002", "evt-00003"]
    assert {e["topic"] for e in batch} == {TWIN}  # only the twin subscription hears it
    assert batch[0]["eventType"] == "AIaaS.Job.Succeeded" and batch[0]["data"] == events[0].data
    assert batch[0]["subject"] == "/tenants/acme/jobs/job-1" and batch[0]["dataVersion"] == "1.0"


def test_redelivery_keeps_every_request_under_event_grids_1_mb(grid: FakeEventGrid) -> None:
    route, transport, _ = routing(grid)
    events = [event(n, size=150_000) for n in range(20)]  # ~3 MB in all
    route.redeliver(webhook(), events)

    batches = published(transport)
    assert len(batches) > 1
    assert all(
        len(r.body.encode() if isinstance(r.body, str) else r.body) < PUBLISH_REQUEST_BYTES for r in transport.requests
    )
    assert [e["id"] for b in batches for e in b] == [e.id for e in events]  # every one, once, in order


def test_a_request_carries_at_most_5000_events() -> None:
    # Real events are too big for 5,000 to fit in 1 MB; tiny ones show the count limit on its own.
    batches = list(publish_batches([{"id": str(n)} for n in range(5_001)], most=PUBLISH_REQUEST_EVENTS))
    assert [len(b) for b in batches] == [PUBLISH_REQUEST_EVENTS, 1]
    assert [i for b in batches for i in b] == list(range(5_001))


def test_a_refused_publish_is_service_unavailable(grid: FakeEventGrid) -> None:
    route, _, _ = routing(grid)
    grid.fail_publish = (503, {"error": {"code": "ServiceUnavailable", "message": "busy"}})
    with pytest.raises(ServiceUnavailable):
        route.redeliver(webhook(), [event(1)])


def test_the_domain_id_is_read_and_a_wrong_one_refused() -> None:
    assert parse_domain_id(DOMAIN_ID) == (AZ_SUB, "rg-aiaas", "evgd-x")
    for wrong in ("", "evgd-x", DOMAIN_ID.replace("domains", "topics"), DOMAIN_ID + "/topics/acme"):
        with pytest.raises(ValueError):
            parse_domain_id(wrong)
