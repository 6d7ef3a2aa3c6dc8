"""Subscriptions through HTTP on the local stack: one generic answer for every endpoint that is refused or fails,
so the handshake scans nothing for a tenant; with the loopback flag off (as in Azure) loopback is never called."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn

from shared import bootstrap
from shared.api.app import create_app
from shared.domain.egress import ENDPOINT_VALIDATION_FAILED, ENDPOINT_VALIDATION_MESSAGE
from shared.localhost.emulators import free_port
from shared.localhost.host import LocalHost
from tests.egress_servers import LoopbackServer, answer, redirect

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def strict_api(stack: LocalHost) -> Iterator[str]:
    """A second HTTP API over the stack's platform, built as in Azure: AIAAS_ALLOW_LOOPBACK_ENDPOINTS off."""
    port = free_port()
    app = create_app(bootstrap.get_platform, allow_loopback_webhooks=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="strict-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the strict API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _refusals(api: httpx.Client, urls: list[str]) -> list[dict[str, object]]:
    bodies = []
    for url in urls:
        created = api.post("/v1/subscriptions", json={"endpointUrl": url})
        assert created.status_code == 400, (url, created.status_code, created.text)
        bodies.append(created.json())
    return bodies


GENERIC = {"error": {"code": ENDPOINT_VALIDATION_FAILED, "message": ENDPOINT_VALIDATION_MESSAGE}}


def test_with_the_loopback_flag_off_every_loopback_form_gets_the_same_answer_and_no_call(
    strict_api: str, create_tenant: Callable[[str], httpx.Client]
) -> None:
    tenant = create_tenant("egress-strict")
    strict = httpx.Client(base_url=strict_api, headers={"Authorization": tenant.headers["Authorization"]}, timeout=60)
    with (
        LoopbackServer() as healthy,
        LoopbackServer(host="::1") as healthy_v6,
        LoopbackServer(tls=True) as self_signed,
        LoopbackServer(answer(500, b"internal")) as failing,
    ):
        urls = [
            f"http://127.0.0.1:{free_port()}/closed",
            self_signed.url,
            f"http://[::1]:{healthy_v6.port}/hook",
            f"http://2130706433:{healthy.port}/hook",
            f"https://0x7f000001:{healthy.port}/hook",
            f"https://127.1:{healthy.port}/hook",
            f"https://localhost:{healthy.port}/hook",
            f"https://[::ffff:127.0.0.1]:{healthy.port}/hook",
            failing.url,
            healthy.url,  # a receiver that would pass the handshake: refused all the same
        ]
        bodies = _refusals(strict, urls)
        assert all(body == GENERIC for body in bodies), bodies
        # Refused before any connection: none of them ever heard from the platform.
        assert (healthy.hits, healthy_v6.hits, self_signed.hits, failing.hits) == (0, 0, 0, 0)
    assert strict.get("/v1/subscriptions").json()["items"] == []


def test_with_the_flag_on_a_closed_port_a_bad_certificate_a_500_and_a_redirect_look_alike(
    create_tenant: Callable[[str], httpx.Client],
) -> None:
    api = create_tenant("egress-dev")
    with (
        LoopbackServer() as healthy,
        LoopbackServer(tls=True) as self_signed,
        LoopbackServer(answer(500, b'{"error": "internal service detail"}')) as failing,
        LoopbackServer(redirect(healthy.url)) as redirecting,
        LoopbackServer(answer(200, b'{"validationResponse": "not the code"}')) as wrong_code,
    ):
        urls = [
            f"http://127.0.0.1:{free_port()}/closed",
            self_signed.url,
            failing.url,
            redirecting.url,
            wrong_code.url,
            f"http://10.1:{healthy.port}/hook",  # private stays refused with the flag (never connected)
        ]
        bodies = _refusals(api, urls)
        assert all(body == GENERIC for body in bodies), bodies
        assert healthy.hits == 0  # the redirect was not followed
        assert (failing.hits, redirecting.hits, wrong_code.hits) == (1, 1, 1)  # the TLS one failed before HTTP

        created = api.post("/v1/subscriptions", json={"endpointUrl": healthy.url})
        assert created.status_code == 201, created.text
        assert healthy.hits == 1
        api.delete(f"/v1/subscriptions/{created.json()['subscriptionId']}").raise_for_status()
