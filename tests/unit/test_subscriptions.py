"""Subscriptions over the API and the fakes: webhooks and callbacks, routing and its rollback, dead letters,
redelivery and the tenant's event log (contract "Event delivery", "Logic Apps connector")."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.adapters.webhooks import HttpEndpointValidator
from shared.api.app import create_app
from shared.domain.delivery import CLIENT_ERROR, DeadLetter
from shared.domain.egress import ENDPOINT_VALIDATION_MESSAGE
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent
from shared.domain.tenants import ADMIN
from shared.services.platform import Platform
from shared.services.subscriptions import MAX_REDELIVERY_EVENTS, callback_host_allowed
from shared.services.tenants import create_key
from tests.fakes import (
    API_URL,
    MODEL_NAME,
    Fakes,
    InMemoryDeadLetterReader,
    InMemoryEventLog,
    RecordingEventRouting,
    add_tenant,
    make_platform,
)

HOOK = "https://hooks.example.org/in"
CALLBACK = "https://prod-01.westeurope.logic.azure.com/workflows/w/triggers/manual/paths/invoke?sig=s3cret"
SECRET = "a-secret-of-24-characters"


@pytest.fixture
def keys(platform: Platform) -> dict[str, str]:
    return {"acme": create_key(platform, "acme", "admin", ADMIN)[1], "globex": add_tenant(platform, "globex")}


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def routing_of(platform: Platform) -> RecordingEventRouting:
    assert isinstance(platform.routing, RecordingEventRouting)
    return platform.routing


def log_of(platform: Platform) -> InMemoryEventLog:
    assert isinstance(platform.event_log, InMemoryEventLog)
    return platform.event_log


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


def event(n: int, *, tenant: str = "acme", kind: str = "AIaaS.Job.Succeeded", model: str = MODEL_NAME) -> PlatformEvent:
    return PlatformEvent(
        id=f"{tenant}-event-{n:05d}",
        event_type=kind,
        subject=f"/tenants/{tenant}/jobs/j{n}",
        data={"jobId": f"j{n}", "tenantId": tenant, "model": {"name": model, "version": "1"}},
        event_time=f"2026-11-{1 + n // 24:02d}T{n % 24:02d}:00:00.000Z",
        topic=tenant,
    )


def subscribe(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    created = client.post("/api/v1/subscriptions", headers=auth(key), json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


# Creating


def test_a_webhook_is_validated_stored_and_routed_with_its_secret_and_an_absolute_location(
    platform: Platform, fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    created = client.post(
        "/api/v1/subscriptions",
        headers=auth(keys["acme"]),
        json={"endpointUrl": HOOK, "secret": SECRET, "retryPolicy": {"maxDeliveryAttempts": 5}},
    )

    assert created.status_code == 201, created.text
    sub = created.json()
    assert created.headers["Location"] == f"{API_URL}/v1/subscriptions/{sub['subscriptionId']}"
    assert created.headers["Location"].startswith("http://testserver/api/v1/")
    assert sub["kind"] == "webhook" and sub["endpointUrl"] == HOOK and "callbackUrl" not in sub
    assert sub["hasSecret"] is True and SECRET not in created.text
    assert sub["retryPolicy"] == {"maxDeliveryAttempts": 5, "eventTimeToLiveInMinutes": 1440}
    assert fakes.validator.validated == [(HOOK, "EventGridSchema")]
    routed, secret = routing_of(platform).routes[("acme", sub["subscriptionId"])]
    assert secret == SECRET and routed.max_delivery_attempts == 5 and routed.kind == "webhook"
    assert SECRET not in str(fakes.subscriptions.docs)
    # The Location is where the subscription is read and deleted (the Logic Apps webhook protocol).
    path = created.headers["Location"].removeprefix("http://testserver")
    assert client.get(path, headers=auth(keys["acme"])).json() == sub
    assert client.delete(path, headers=auth(keys["acme"])).status_code == 204
    assert routing_of(platform).routes == {} and fakes.subscriptions.docs == {}


def test_a_callback_gets_no_handshake_is_egress_checked_and_shows_no_query(
    platform: Platform, fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(
        client,
        keys["acme"],
        callbackUrl=CALLBACK,
        eventTypes=["AIaaS.Job.Succeeded"],
        modelNames=[MODEL_NAME],
        retryPolicy={"maxDeliveryAttempts": 3, "eventTimeToLiveInMinutes": 60},
    )

    assert fakes.validator.validated == [] and fakes.validator.checked == [CALLBACK]
    assert sub["kind"] == "callback" and "endpointUrl" not in sub
    assert sub["callbackUrl"] == CALLBACK.split("?")[0]  # the signature in the query is never shown
    assert sub["modelNames"] == [MODEL_NAME] and sub["hasSecret"] is False
    routed, secret = routing_of(platform).routes[("acme", sub["subscriptionId"])]
    assert secret is None and routed.endpoint_url == CALLBACK and routed.event_ttl_minutes == 60
    listed = client.get("/api/v1/subscriptions", headers=auth(keys["acme"])).json()["items"]
    assert listed == [sub]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({}, "InvalidRequest", id="neither-url"),
        pytest.param({"endpointUrl": HOOK, "callbackUrl": CALLBACK}, "InvalidRequest", id="both-urls"),
        pytest.param({"callbackUrl": CALLBACK, "secret": SECRET}, "InvalidSecret", id="secret-on-callback"),
        pytest.param({"endpointUrl": HOOK, "secret": "short"}, "InvalidSecret", id="secret-short"),
        pytest.param({"endpointUrl": HOOK, "secret": "x" * 257}, "InvalidSecret", id="secret-long"),
        pytest.param({"endpointUrl": HOOK, "secret": "x" * 5000}, "InvalidRequest", id="secret-huge"),
        pytest.param({"endpointUrl": HOOK, "retryPolicy": {"maxDeliveryAttempts": 0}}, "InvalidRetryPolicy", id="0"),
        pytest.param({"endpointUrl": HOOK, "retryPolicy": {"maxDeliveryAttempts": 31}}, "InvalidRetryPolicy", id="31"),
        pytest.param(
            {"endpointUrl": HOOK, "retryPolicy": {"eventTimeToLiveInMinutes": 0}}, "InvalidRetryPolicy", id="ttl-0"
        ),
        pytest.param(
            {"endpointUrl": HOOK, "retryPolicy": {"eventTimeToLiveInMinutes": 1441}},
            "InvalidRetryPolicy",
            id="ttl-1441",
        ),
        pytest.param({"endpointUrl": HOOK, "retryPolicy": {"other": 1}}, "InvalidRequest", id="retry-extra"),
        pytest.param({"endpointUrl": HOOK, "modelNames": []}, "InvalidModelNames", id="models-empty"),
        pytest.param(
            {"endpointUrl": HOOK, "modelNames": [f"m{i}" for i in range(26)]}, "InvalidModelNames", id="models-26"
        ),
        pytest.param({"endpointUrl": HOOK, "modelNames": ["Not A Name"]}, "InvalidModelNames", id="models-bad"),
        pytest.param({"endpointUrl": HOOK, "modelNames": ["a", "a"]}, "InvalidModelNames", id="models-repeated"),
        pytest.param({"callbackUrl": "http://example.org/cb"}, "EndpointValidationFailed", id="callback-http"),
        pytest.param({"callbackUrl": "not a url"}, "EndpointValidationFailed", id="callback-not-url"),
        pytest.param({"callbackUrl": "https://u:p@example.org/cb"}, "EndpointValidationFailed", id="callback-creds"),
        pytest.param({"callbackUrl": "http://127.0.0.1:9/cb"}, "EndpointValidationFailed", id="callback-loopback"),
    ],
)
def test_a_bad_subscription_is_400_with_its_code_and_nothing_is_stored_or_routed(
    platform: Platform, fakes: Fakes, client: TestClient, keys: dict[str, str], body: dict[str, Any], code: str
) -> None:
    response = client.post("/api/v1/subscriptions", headers=auth(keys["acme"]), json=body)

    assert_error(response, 400, code)
    assert fakes.subscriptions.docs == {} and routing_of(platform).routes == {}


def test_a_callback_without_event_types_gets_the_job_outcomes_and_model_events_only_by_name(
    client: TestClient, keys: dict[str, str]
) -> None:
    """The Logic Apps trigger "When a job finishes" saved with no outcome picked: its workflow must run once per
    finished job, never again for the job's drift event; a webhook without eventTypes still gets everything."""
    callback = subscribe(client, keys["acme"], callbackUrl=CALLBACK)
    webhook = subscribe(client, keys["acme"], endpointUrl="https://hooks.example.com/aiaas")
    asked = subscribe(client, keys["acme"], callbackUrl=CALLBACK, eventTypes=["AIaaS.Model.DriftDetected"])

    assert callback["eventTypes"] == [
        "AIaaS.Job.Succeeded",
        "AIaaS.Job.PartiallySucceeded",
        "AIaaS.Job.Failed",
        "AIaaS.Job.Rejected",
        "AIaaS.Job.Cancelled",
    ]
    assert "AIaaS.Model.DriftDetected" in webhook["eventTypes"]
    assert asked["eventTypes"] == ["AIaaS.Model.DriftDetected"]


def test_loopback_http_callbacks_only_when_allowed_and_never_to_other_http_hosts(
    platform: Platform, fakes: Fakes, keys: dict[str, str]
) -> None:
    local = TestClient(create_app(lambda: platform, allow_loopback_webhooks=True), raise_server_exceptions=False)

    sub = subscribe(local, keys["acme"], callbackUrl="http://127.0.0.1:9/cb")
    refused = local.post("/api/v1/subscriptions", headers=auth(keys["acme"]), json={"callbackUrl": "http://x.org/c"})

    assert sub["callbackUrl"] == "http://127.0.0.1:9/cb"
    assert_error(refused, 400, "EndpointValidationFailed")
    assert len(fakes.subscriptions.docs) == 1


def test_a_callback_the_egress_policy_refuses_is_the_one_generic_400(
    fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    fakes.validator.refuse(CALLBACK, "resolves to 10.0.0.5")

    error = assert_error(
        client.post("/api/v1/subscriptions", headers=auth(keys["acme"]), json={"callbackUrl": CALLBACK}),
        400,
        "EndpointValidationFailed",
    )

    assert error["message"] == ENDPOINT_VALIDATION_MESSAGE and "10.0.0.5" not in error["message"]
    assert fakes.subscriptions.docs == {}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://prod-01.westeurope.logic.azure.com/w", True),
        ("https://PROD-01.WestEurope.Logic.Azure.Com/w", True),
        ("https://hooks.example.org/cb", True),
        ("https://logic.azure.com/w", False),  # ".suffix" is hosts under it, not the bare suffix
        ("https://evil-logic.azure.com/w", False),
        ("https://logic.azure.com.evil.org/w", False),
        ("https://sub.hooks.example.org/cb", False),  # an exact entry is that host only
        ("https://example.org/cb", False),
    ],
)
def test_callbacks_must_be_on_the_allow_list_when_there_is_one(keys: dict[str, str], url: str, allowed: bool) -> None:
    del keys
    plat = make_platform(callback_hosts=(".logic.azure.com", "hooks.example.org"))
    key = add_tenant(plat, "acme")
    client = TestClient(create_app(lambda: plat), raise_server_exceptions=False)

    response = client.post("/api/v1/subscriptions", headers=auth(key), json={"callbackUrl": url})

    if allowed:
        assert response.status_code == 201, response.text
    else:
        assert_error(response, 400, "EndpointValidationFailed")
        assert routing_of(plat).routes == {}


def test_callback_host_allowed_without_a_list_allows_any_host_and_never_an_empty_one() -> None:
    assert callback_host_allowed("anything.example", ())
    assert not callback_host_allowed("", (".example",))
    assert callback_host_allowed("a.example.", (".example",))  # a trailing dot names the same host


def test_when_routing_fails_the_subscription_is_rolled_back_and_the_answer_is_503(
    platform: Platform, fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    routing_of(platform).fail_create = RuntimeError("Event Grid said 500")

    response = client.post("/api/v1/subscriptions", headers=auth(keys["acme"]), json={"endpointUrl": HOOK})

    error = assert_error(response, 503, "ServiceBusy")
    assert "Event Grid" not in error["message"] and response.headers["Retry-After"]
    assert fakes.subscriptions.docs == {}  # never a half-made subscription
    assert client.get("/api/v1/subscriptions", headers=auth(keys["acme"])).json() == {"items": []}


def test_deleting_another_tenants_subscription_is_404_and_keeps_its_route(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK)

    assert_error(client.delete(f"/api/v1/subscriptions/{sub['subscriptionId']}", headers=auth(keys["globex"])), 404)

    assert ("acme", sub["subscriptionId"]) in routing_of(platform).routes


def test_the_webhook_endpoint_checks_a_callback_against_the_addresses_its_host_resolves_to() -> None:
    public = HttpEndpointValidator(resolver=lambda host, port: ["93.184.216.34"])
    private = HttpEndpointValidator(resolver=lambda host, port: ["93.184.216.34", "10.0.0.5"])

    public.check_callback("https://callback.example/cb")
    with pytest.raises(InvalidInput):
        private.check_callback("https://callback.example/cb")
    with pytest.raises(InvalidInput):
        public.check_callback("http://callback.example/cb")


# Dead letters


def test_dead_letters_are_listed_in_the_contracts_shape_and_paged(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK)
    reader = platform.dead_letters
    assert isinstance(reader, InMemoryDeadLetterReader)
    for n in range(3):
        reader.add(
            sub["subscriptionId"],
            DeadLetter(event(n), CLIENT_ERROR, 1, "BadRequest", 400, f"2026-11-01T00:0{n}:00.000Z"),
        )
    path = f"/api/v1/subscriptions/{sub['subscriptionId']}/deadletters"

    first = client.get(path, params={"limit": 2}, headers=auth(keys["acme"])).json()
    rest = client.get(
        path, params={"limit": 2, "continuationToken": first["continuationToken"]}, headers=auth(keys["acme"])
    ).json()

    assert [d["event"]["id"] for d in first["items"] + rest["items"]] == [event(n).id for n in range(3)]
    assert first["items"][0] == {
        "event": event(0).to_eventgrid(),
        "deadLetterReason": "UndeliverableDueToClientError",
        "deliveryAttempts": 1,
        "lastDeliveryOutcome": "BadRequest",
        "lastHttpStatusCode": 400,
        "lastDeliveryAttemptTime": "2026-11-01T00:00:00.000Z",
    }
    assert rest["continuationToken"] is None
    assert_error(client.get(path, headers=auth(keys["globex"])), 404, "NotFound")
    assert_error(client.get(path, params={"limit": 0}, headers=auth(keys["acme"])), 400, "InvalidRequest")


# Redelivery


def test_redelivery_by_ids_sends_the_matching_events_with_their_ids_and_names_the_missing(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK, eventTypes=["AIaaS.Job.Succeeded"])
    log_of(platform).record([event(1), event(2, kind="AIaaS.Job.Failed"), event(3), event(4, tenant="globex")])
    ids = [event(3).id, event(1).id, event(2).id, event(4, tenant="globex").id, "never-published"]

    answer = client.post(
        f"/api/v1/subscriptions/{sub['subscriptionId']}/redeliver", headers=auth(keys["acme"]), json={"eventIds": ids}
    )

    assert answer.status_code == 202, answer.text
    # Another tenant's event answers as one never published; a Failed event is not what this subscription takes.
    assert answer.json() == {
        "subscriptionId": sub["subscriptionId"],
        "events": 2,
        "notFound": [event(4, tenant="globex").id, "never-published"],
    }
    [(sub_id, sent)] = routing_of(platform).redelivered
    assert sub_id == sub["subscriptionId"] and [e.id for e in sent] == [event(3).id, event(1).id]
    assert sent[0] == event(3)  # as published: same id, same body


def test_redelivery_by_id_finds_an_event_the_log_no_longer_keeps_in_the_dead_letters(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK)
    reader = platform.dead_letters
    assert isinstance(reader, InMemoryDeadLetterReader)
    reader.add(sub["subscriptionId"], DeadLetter(event(1), CLIENT_ERROR, 1, "BadRequest", 400, "2026-11-01"))

    answer = client.post(
        f"/api/v1/subscriptions/{sub['subscriptionId']}/redeliver",
        headers=auth(keys["acme"]),
        json={"eventIds": [event(1).id, event(2).id]},
    )

    assert answer.json() == {"subscriptionId": sub["subscriptionId"], "events": 1, "notFound": [event(2).id]}
    assert routing_of(platform).redelivered == [(sub["subscriptionId"], [event(1)])]


def test_redelivery_of_a_window_replays_the_events_the_filters_let_through_oldest_first(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK, modelNames=["other-model"])
    log_of(platform).record([event(n, model="other-model" if n % 2 else MODEL_NAME) for n in range(10)])
    log_of(platform).record([event(5, tenant="globex", model="other-model")])

    answer = client.post(
        f"/api/v1/subscriptions/{sub['subscriptionId']}/redeliver",
        headers=auth(keys["acme"]),
        json={"since": event(2).event_time, "until": "2026-11-01T08:00:00+00:00"},
    )

    assert answer.status_code == 202, answer.text
    assert answer.json() == {"subscriptionId": sub["subscriptionId"], "events": 3, "notFound": []}
    [(_, sent)] = routing_of(platform).redelivered
    assert [e.id for e in sent] == [event(n).id for n in (3, 5, 7)]  # since inclusive, until exclusive


def test_redelivery_of_a_window_without_matching_events_schedules_nothing(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK)

    answer = client.post(
        f"/api/v1/subscriptions/{sub['subscriptionId']}/redeliver",
        headers=auth(keys["acme"]),
        json={"since": "2026-11-01"},
    )

    assert answer.status_code == 202 and answer.json()["events"] == 0
    assert routing_of(platform).redelivered == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({}, "InvalidRequest", id="neither"),
        pytest.param({"eventIds": ["a"], "since": "2026-11-01T00:00:00Z"}, "InvalidRequest", id="both"),
        pytest.param({"until": "2026-11-01T00:00:00Z"}, "InvalidRequest", id="until-alone"),
        pytest.param({"eventIds": []}, "TooManyEvents", id="no-ids"),
        pytest.param({"eventIds": ["a"] * 2 + [str(i) for i in range(10_000)]}, "InvalidRequest", id="10002-ids"),
        pytest.param({"since": "yesterday"}, "InvalidTime", id="since-not-iso"),
        pytest.param({"since": "2026-11-01T00:00:00Z", "until": "soon"}, "InvalidTime", id="until-not-iso"),
        pytest.param({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "InvalidTime", id="order"),
        pytest.param({"since": "2026-11-01", "other": 1}, "InvalidRequest", id="extra-field"),
        pytest.param({"eventIds": ["x" * 129]}, "InvalidRequest", id="long-id"),
    ],
)
def test_a_bad_redelivery_is_400_and_schedules_nothing(
    platform: Platform, client: TestClient, keys: dict[str, str], body: dict[str, Any], code: str
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK)

    response = client.post(
        f"/api/v1/subscriptions/{sub['subscriptionId']}/redeliver", headers=auth(keys["acme"]), json=body
    )

    assert_error(response, 400, code)
    assert routing_of(platform).redelivered == []


def test_a_window_over_the_limit_is_refused_never_cut(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK)
    log_of(platform).record([event(n) for n in range(MAX_REDELIVERY_EVENTS + 1)])

    response = client.post(
        f"/api/v1/subscriptions/{sub['subscriptionId']}/redeliver",
        headers=auth(keys["acme"]),
        json={"since": "2026-01-01T00:00:00Z"},
    )

    assert_error(response, 400, "TooManyEvents")
    assert routing_of(platform).redelivered == []


def test_redelivery_to_another_tenants_subscription_is_404(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    sub = subscribe(client, keys["acme"], endpointUrl=HOOK)
    log_of(platform).record([event(1, tenant="globex")])

    response = client.post(
        f"/api/v1/subscriptions/{sub['subscriptionId']}/redeliver",
        headers=auth(keys["globex"]),
        json={"eventIds": [event(1, tenant="globex").id]},
    )

    assert_error(response, 404, "NotFound")
    assert routing_of(platform).redelivered == []


# The event log


def test_events_are_listed_newest_first_filtered_and_paged_for_the_callers_tenant_only(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    log_of(platform).record(
        [event(n, kind="AIaaS.Job.Failed" if n % 3 == 0 else "AIaaS.Job.Succeeded") for n in range(8)]
    )
    log_of(platform).record([event(n, tenant="globex") for n in range(8)])
    headers = auth(keys["acme"])

    everything = client.get("/api/v1/events", headers=headers).json()
    failed = client.get("/api/v1/events", params={"type": "AIaaS.Job.Failed"}, headers=headers).json()
    window = client.get(
        "/api/v1/events", params={"since": event(2).event_time, "until": event(5).event_time}, headers=headers
    ).json()
    first = client.get("/api/v1/events", params={"limit": 5}, headers=headers).json()
    rest = client.get(
        "/api/v1/events", params={"limit": 5, "continuationToken": first["continuationToken"]}, headers=headers
    ).json()

    assert [e["id"] for e in everything["items"]] == [event(n).id for n in reversed(range(8))]
    assert everything["items"][0] == event(7).to_eventgrid() and everything["continuationToken"] is None
    assert [e["id"] for e in failed["items"]] == [event(n).id for n in (6, 3, 0)]
    assert [e["id"] for e in window["items"]] == [event(n).id for n in (4, 3, 2)]
    assert [e["id"] for e in first["items"] + rest["items"]] == [e["id"] for e in everything["items"]]
    assert rest["continuationToken"] is None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"limit": 1001}, "InvalidRequest", id="limit-1001"),
        pytest.param({"limit": 0}, "InvalidRequest", id="limit-0"),
        pytest.param({"since": "last tuesday"}, "InvalidTime", id="since"),
        pytest.param({"until": "2026-13-01"}, "InvalidTime", id="until"),
        pytest.param({"type": "x" * 129}, "InvalidRequest", id="type-long"),
    ],
)
def test_a_bad_event_listing_is_400(
    client: TestClient, keys: dict[str, str], params: dict[str, Any], code: str
) -> None:
    assert_error(client.get("/api/v1/events", params=params, headers=auth(keys["acme"])), 400, code)
