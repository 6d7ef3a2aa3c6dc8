"""The Logic Apps trigger as Logic Apps drives it: read from the connector, with a callback that answers 202 to all."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.localhost.host import LocalHost
from shared.localhost.logicapps_callback import LogicAppsCallback
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((REPO / "connectors/logicapps/apiDefinition.swagger.json").read_text())
MODEL = "breast-cancer-classifier"
ROWS = b"\n".join((REPO / "build/samples/breast-cancer.jsonl").read_bytes().splitlines()[:5]) + b"\n"
TERMINAL = {"succeeded", "partially_succeeded", "failed", "rejected", "cancelled"}


def connector_operation(predicate: Callable[[str, dict[str, Any]], bool]) -> tuple[str, str, dict[str, Any]]:
    """(path, method, operation) of the one operation of the connector that `predicate(method, op)` picks."""
    [found] = [
        (path, method, op)
        for path, item in DEFINITION["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "operationId" in op and predicate(method, op)
    ]
    return found


def notification_field(op: dict[str, Any]) -> str:
    """The body field Logic Apps puts its callback URL in (x-ms-notification-url)."""
    [body] = [p for p in op["parameters"] if p["in"] == "body"]
    schema = body["schema"]
    [name] = [name for name, field in schema["properties"].items() if field.get("x-ms-notification-url")]
    return str(name)


def connector_url(stack: LocalHost, path: str) -> str:
    """`path` of the connector on this stack: its origin, the connector's basePath, the operation's path."""
    parts = urlsplit(stack.api_url)
    return f"{parts.scheme}://{parts.netloc}{DEFINITION['basePath']}{path}"


def event_of(receiver_events: list[Any], blob_path: str) -> list[dict[str, Any]]:
    return [e for e in receiver_events if isinstance(e, dict) and e["data"]["input"]["blobPath"] == blob_path]


def test_trigger_subscribes_receives_its_event_and_unsubscribes_on_location(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    tenant = create_tenant("logicapps")
    path, method, trigger = connector_operation(lambda _, op: "x-ms-trigger" in op)
    delete_path, _, unsubscribe = connector_operation(
        lambda m, op: m == "delete" and op.get("x-ms-visibility") == "internal"
    )
    field = notification_field(trigger)

    with LogicAppsCallback() as callback, LogicAppsCallback() as control, WebhookReceiver() as witness:
        # Logic Apps calls the trigger operation with the connection's key and its callback URL in the marked field.
        answer = tenant.request(method, connector_url(stack, path), json={field: callback.url})
        assert answer.status_code == 201, answer.text
        location = answer.headers["Location"]
        # The Location is the connector's own unsubscribe operation, so Logic Apps' DELETE on it carries the key.
        pattern = re.escape(connector_url(stack, delete_path))
        assert re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[0-9a-f]{32}", pattern), location), location
        assert answer.json()["callbackUrl"] == callback.url.split("?")[0]  # never the signature
        assert callback.requests == []  # no validation request: a Logic App could not echo it

        # Another trigger that stays subscribed, and an ordinary webhook: both see the second job below.
        control_answer = tenant.request(method, connector_url(stack, path), json={field: control.url})
        assert control_answer.status_code == 201, control_answer.text
        assert tenant.post("/v1/subscriptions", json={"endpointUrl": witness.url}).status_code == 201

        first = upload(tenant, MODEL, "first.jsonl", ROWS)
        [event] = event_of(callback.wait_for(1, timeout=60), first)
        assert event["eventType"] == "AIaaS.Job.Succeeded" and event["id"]
        assert event["subject"] == f"/tenants/logicapps/jobs/{event['data']['jobId']}"
        assert event["data"]["counts"] == {"records": 5, "succeeded": 5, "failed": 0}
        [delivery] = [r for r in callback.requests if r["method"] == "POST"]
        assert delivery["headers"]["aeg-event-type"] == "Notification"  # one JSON object per POST, answered 202
        assert isinstance(delivery["body"], dict)

        # Unsubscribing needs the key, as every connector call does: without it the subscription stays.
        assert httpx.delete(location, timeout=30).status_code == 401
        assert tenant.get(location).status_code == 200
        assert tenant.delete(location).status_code == 204, unsubscribe["operationId"]
        assert tenant.get(location).status_code == 404

        second = upload(tenant, MODEL, "second.jsonl", ROWS)
        witness.wait_until(lambda: bool(event_of(witness.events, second)), timeout=60)
        [seen] = event_of(witness.events, second)
        assert seen["data"]["status"] in TERMINAL
        assert tenant.get(f"/v1/jobs/{seen['data']['jobId']}").json()["status"] in TERMINAL
        [relayed] = event_of(control.wait_for(2, timeout=60), second)  # the relay ran for the second job too
        assert relayed["id"] == seen["id"]

    assert callback.events == [event]  # its own event, once, and nothing after the DELETE
