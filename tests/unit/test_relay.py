"""The relay of callback subscriptions over HTTP: its key, Event Grid's handshakes, and the callback's outcome
mirrored so that Event Grid's retry and dead-letter rules still apply (a loopback callback server answers)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.adapters.egress import Timeouts
from shared.adapters.webhooks import HttpEndpointValidator
from shared.api.app import create_app
from shared.domain.delivery import RELAY_HEADER, relay_key
from shared.domain.events import PlatformEvent, Subscription
from shared.localhost.emulators import free_port
from shared.services.platform import Platform
from tests.fakes import MODEL_NAME, add_tenant

MASTER = "relay-master-key-of-the-tests"
SLOW_SECONDS = 3.0
# The relay waits this long for the callback in these tests (25 s in production).
RELAY_SECONDS = 1.0


class CallbackServer:
    """A loopback callback: the path's first segment is the status it answers ("slow": 200 after SLOW_SECONDS)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                answer = self.path.strip("/").split("/")[0].split("?")[0]
                if answer == "slow":
                    time.sleep(SLOW_SECONDS)
                    answer = "200"
                self.send_response(int(answer))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def callback() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.close()


@pytest.fixture
def relay_platform(platform: Platform, callback: CallbackServer) -> Platform:
    callback.received.clear()
    platform.validator = HttpEndpointValidator(callback_timeouts=Timeouts(connect=1.0, read=RELAY_SECONDS, total=2))
    add_tenant(platform, "globex")
    return platform


@pytest.fixture
def client(relay_platform: Platform) -> TestClient:
    app = create_app(
        lambda: relay_platform, allow_loopback_webhooks=True, relay_key=MASTER, relay_timeout_seconds=RELAY_SECONDS
    )
    return TestClient(app, raise_server_exceptions=False)


def add_callback(
    platform: Platform, url: str, *, tenant: str = "acme", schema: str = "EventGridSchema", kind: str = "callback"
) -> Subscription:
    sub = Subscription(
        tenant_id=tenant,
        subscription_id=uuid.uuid4().hex,
        endpoint_url=url,
        schema=schema,
        kind=kind,
    )
    platform.subscriptions.put_subscription(sub)
    return sub


EVENT = PlatformEvent(
    id="5c1d0e4f9a8b7c6d5e4f3a2b1c0d9e8f",
    event_type="AIaaS.Job.Succeeded",
    subject="/tenants/acme/jobs/j1",
    data={"jobId": "j1", "tenantId": "acme", "status": "succeeded", "model": {"name": MODEL_NAME, "version": "1"}},
    event_time="2026-12-01T10:00:00.000Z",
    topic="acme",
)


def deliver(
    client: TestClient,
    sub: Subscription,
    *,
    key: str | None = "derive",
    path_tenant: str | None = None,
    body: Any = None,
    content: bytes | None = None,
) -> Any:
    headers = {"aeg-event-type": "Notification", "aeg-delivery-count": "2", "aeg-subscription-name": "AIAAS-X"}
    if key == "derive":
        key = relay_key(MASTER, path_tenant or sub.tenant_id, sub.subscription_id)
    if key is not None:
        headers[RELAY_HEADER] = key
    payload = content if content is not None else json.dumps([EVENT.to_eventgrid()] if body is None else body)
    return client.post(
        f"/api/relay/{path_tenant or sub.tenant_id}/{sub.subscription_id}", headers=headers, content=payload
    )


# The outcome, mirrored


@pytest.mark.parametrize(
    ("answer", "relayed"),
    [
        ("200", 200),
        ("202", 200),  # what a Logic Apps callback answers
        ("204", 200),
        ("400", 400),  # Event Grid dead-letters these at once
        ("401", 401),
        ("403", 403),
        ("413", 413),
        ("404", 502),  # anything else is retried
        ("408", 502),
        ("500", 502),
        ("429", 503),
        ("503", 503),
        ("slow", 504),
    ],
)
def test_the_relay_mirrors_the_callbacks_answer_so_event_grid_retries_or_dead_letters_it(
    relay_platform: Platform, client: TestClient, callback: CallbackServer, answer: str, relayed: int
) -> None:
    sub = add_callback(relay_platform, callback.url(f"{answer}/hook?sig=abc"))

    response = deliver(client, sub)

    assert response.status_code == relayed, response.text
    [(path, headers, body)] = callback.received
    assert path == f"/{answer}/hook?sig=abc"
    assert json.loads(body) == EVENT.to_eventgrid()  # one JSON object, not Event Grid's array
    assert headers["content-type"] == "application/json"
    assert headers["aeg-delivery-count"] == "2" and headers["aeg-event-type"] == "Notification"
    assert RELAY_HEADER not in headers  # the relay's key never leaves the platform
    if relayed != 200:
        assert set(response.json()["error"]) == {"code", "message"}


def test_a_callback_nobody_listens_on_is_502_and_retried(relay_platform: Platform, client: TestClient) -> None:
    sub = add_callback(relay_platform, f"http://127.0.0.1:{free_port()}/cb")

    assert deliver(client, sub).status_code == 502


def test_a_cloudevents_subscription_gets_one_cloudevent_whatever_the_delivery_brought(
    relay_platform: Platform, client: TestClient, callback: CallbackServer
) -> None:
    sub = add_callback(relay_platform, callback.url("202/ce"), schema="CloudEventSchemaV1_0")
    cloudevent = EVENT.to_cloudevent("/tenants/acme")

    as_eventgrid = deliver(client, sub)
    as_cloudevent = deliver(client, sub, body=cloudevent)

    assert as_eventgrid.status_code == 200 and as_cloudevent.status_code == 200
    bodies = [json.loads(body) for _, _, body in callback.received]
    assert bodies == [cloudevent, cloudevent]
    assert all(h["content-type"].startswith("application/cloudevents+json") for _, h, _ in callback.received)


def test_a_callback_on_a_private_address_is_refused_without_a_connection(
    relay_platform: Platform, client: TestClient
) -> None:
    sub = add_callback(relay_platform, "http://10.0.0.5:8080/cb")

    response = deliver(client, sub)

    assert response.status_code == 403  # dead-lettered at once, where the tenant sees it
    assert response.json()["error"]["code"] == "CallbackNotAllowed"


def test_a_callback_host_off_the_allow_list_is_refused_and_nothing_is_sent(
    relay_platform: Platform, client: TestClient, callback: CallbackServer
) -> None:
    sub = add_callback(relay_platform, callback.url("200/cb"))
    relay_platform.callback_hosts = (".logic.azure.com",)

    response = deliver(client, sub)

    assert response.status_code == 403 and callback.received == []


# Who may call it


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("0" * 64, id="wrong"),
        pytest.param(relay_key("another-master", "acme", "x"), id="other-master"),
    ],
)
def test_a_delivery_without_the_subscriptions_relay_key_is_401_and_sends_nothing(
    relay_platform: Platform, client: TestClient, callback: CallbackServer, key: str | None
) -> None:
    sub = add_callback(relay_platform, callback.url("200/cb"))

    response = deliver(client, sub, key=key)

    assert response.status_code == 401
    assert response.json() == {"error": {"code": "Unauthorized", "message": "the credential is not valid"}}
    assert callback.received == []


def test_one_subscriptions_key_opens_no_other(
    relay_platform: Platform, client: TestClient, callback: CallbackServer
) -> None:
    mine = add_callback(relay_platform, callback.url("200/mine"))
    other = add_callback(relay_platform, callback.url("200/other"))

    response = deliver(client, other, key=relay_key(MASTER, "acme", mine.subscription_id))

    assert response.status_code == 401 and callback.received == []


def test_another_tenants_subscription_under_its_own_path_is_refused_or_dropped_never_delivered(
    relay_platform: Platform, client: TestClient, callback: CallbackServer
) -> None:
    acme = add_callback(relay_platform, callback.url("200/acme"))

    with_acme_key = deliver(client, acme, path_tenant="globex", key=relay_key(MASTER, "acme", acme.subscription_id))
    # Only the platform can make a key for globex's path; even then the tenant-first read finds nothing.
    with_globex_key = deliver(client, acme, path_tenant="globex")
    missing = add_callback(relay_platform, callback.url("200/missing"), tenant="globex")
    relay_platform.subscriptions.delete_subscription("globex", missing.subscription_id)
    nobodys = deliver(client, missing)

    assert with_acme_key.status_code == 401
    assert with_globex_key.status_code == 200 and with_globex_key.json() == nobodys.json()
    assert callback.received == []


def test_a_relay_without_a_configured_key_refuses_every_delivery(
    relay_platform: Platform, callback: CallbackServer
) -> None:
    client = TestClient(create_app(lambda: relay_platform, allow_loopback_webhooks=True), raise_server_exceptions=False)
    sub = add_callback(relay_platform, callback.url("200/cb"))

    assert deliver(client, sub, key=relay_key("", "acme", sub.subscription_id)).status_code == 401
    assert callback.received == []


# What else arrives there


def test_a_deleted_subscriptions_pending_delivery_is_answered_200_and_dropped(
    relay_platform: Platform, client: TestClient, callback: CallbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    sub = add_callback(relay_platform, callback.url("200/cb"))
    relay_platform.subscriptions.delete_subscription("acme", sub.subscription_id)

    with caplog.at_level(logging.INFO, logger="shared.services.relay"):
        response = deliver(client, sub)

    assert response.status_code == 200  # Event Grid stops retrying: DELETE stops deliveries at once
    assert callback.received == []
    assert any("gone" in record.getMessage() for record in caplog.records)


def test_a_webhook_subscription_is_never_relayed(
    relay_platform: Platform, client: TestClient, callback: CallbackServer
) -> None:
    sub = add_callback(relay_platform, callback.url("200/hook"), kind="webhook")

    assert deliver(client, sub).status_code == 403 and callback.received == []


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe",
        b"[" * 100_000,
        b"[]",
        b"{}",
        b'[{"id": "x"}]',
        b"[1]",
        b'[{"id": "x", "type": "AIaaS.Job.Succeeded"}]',
        b'[{"id": "x", "eventType": "AIaaS.Job.Succeeded", "data": "text"}]',
        b'{"specversion": "1.0", "id": 7, "type": "AIaaS.Job.Succeeded"}',
    ],
    ids=["not-json", "not-utf8", "deep", "empty", "obj", "no-type", "num", "half-cloudevent", "data-text", "id-num"],
)
def test_a_delivery_that_holds_no_event_is_400(
    relay_platform: Platform, client: TestClient, callback: CallbackServer, content: bytes
) -> None:
    sub = add_callback(relay_platform, callback.url("200/cb"))

    response = deliver(client, sub, content=content)

    assert response.status_code == 400 and set(response.json()["error"]) == {"code", "message"}
    assert callback.received == []


def test_the_relay_answers_event_grids_validation_handshake_itself(
    relay_platform: Platform, client: TestClient, callback: CallbackServer
) -> None:
    sub = add_callback(relay_platform, callback.url("202/cb"))
    validation = {
        "id": "v1",
        "topic": "t",
        "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-12-01T10:00:00Z",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": None},
        "dataVersion": "2",
        "metadataVersion": "1",
    }

    response = client.post(
        f"/api/relay/acme/{sub.subscription_id}",
        headers={
            "aeg-event-type": "SubscriptionValidation",
            RELAY_HEADER: relay_key(MASTER, "acme", sub.subscription_id),
        },
        json=[validation],
    )
    options = client.options(
        f"/api/relay/acme/{sub.subscription_id}", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )

    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert options.status_code == 200 and options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert callback.received == []  # the callback (a Logic App) never sees the handshake
