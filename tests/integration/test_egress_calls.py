"""The egress policy's bounded calls against misbehaving loopback servers: redirects, slow and oversized answers,
failing handshakes (all one generic error), deliveries and remote models (the loopback flag on)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.adapters.egress import DeadlineExceeded, EgressPolicy, ResponseTooLarge, Timeouts, send_bounded
from shared.adapters.webhooks import HttpEndpointValidator
from shared.domain.egress import ENDPOINT_VALIDATION_FAILED, ENDPOINT_VALIDATION_MESSAGE
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent, Subscription
from shared.domain.models import ModelCard
from shared.inference.remote import RemoteEndpointUnavailable, RemoteOipPredictor
from shared.localhost.broker import LocalEventBroker
from shared.localhost.emulators import free_port
from tests.egress_servers import LoopbackServer, answer, ca_and_certificate, redirect
from tests.fakes import InMemoryBlobStore, InMemorySubscriptionStore

pytestmark = pytest.mark.integration


@dataclass
class _Ports:
    subscriptions: InMemorySubscriptionStore
    blobs: InMemoryBlobStore


def test_a_redirect_is_not_followed() -> None:
    with LoopbackServer() as target, LoopbackServer(redirect("http://127.0.0.1:1/x")) as hop:
        with LoopbackServer(redirect(target.url)) as first:
            client = EgressPolicy(allow_loopback=True).client()
            answer_ = send_bounded(client, "POST", first.url, max_bytes=1024, content=b"[]")
        assert answer_.status_code == 302
        assert first.hits == 1 and target.hits == 0 and hop.hits == 0


def test_a_slow_server_hits_the_read_timeout() -> None:
    with LoopbackServer(stall=True) as slow:
        client = EgressPolicy(allow_loopback=True).client(Timeouts(connect=1.0, read=0.3, total=5.0))
        with pytest.raises(httpx.ReadTimeout):
            send_bounded(client, "POST", slow.url, max_bytes=1024, content=b"[]")
        assert slow.hits == 1


def test_a_trickling_answer_hits_the_overall_deadline() -> None:
    def trickle(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.01)

    with LoopbackServer(trickle) as server:
        client = EgressPolicy(allow_loopback=True).client(Timeouts(read=1.0, total=0.3))
        with pytest.raises(DeadlineExceeded):
            send_bounded(client, "GET", server.url, max_bytes=10_000, total_seconds=0.3)


def test_an_answer_over_the_cap_is_refused_or_cut() -> None:
    with LoopbackServer(answer(200, b"x" * 100_000)) as big:
        client = EgressPolicy(allow_loopback=True).client()
        with pytest.raises(ResponseTooLarge):
            send_bounded(client, "GET", big.url, max_bytes=1000)
        assert len(send_bounded(client, "GET", big.url, max_bytes=1000, truncate=True).content) == 1000


def test_every_handshake_failure_is_the_same_generic_error() -> None:
    validator = HttpEndpointValidator(timeouts=Timeouts(connect=1.0, read=0.5, total=2.0))
    with (
        LoopbackServer(answer(500, b'{"error": "internal service detail"}')) as failing,
        LoopbackServer(tls=True) as self_signed,
        LoopbackServer(redirect("http://127.0.0.1:1/")) as redirecting,
        LoopbackServer(stall=True) as slow,
        LoopbackServer() as healthy,
    ):
        urls = [
            f"http://127.0.0.1:{free_port()}/closed",
            self_signed.url,
            failing.url,
            redirecting.url,
            slow.url,
        ]
        messages = set()
        for url in urls:
            with pytest.raises(InvalidInput) as failed:
                validator.validate(url, "EventGridSchema", allow_loopback=True)
            assert failed.value.code == ENDPOINT_VALIDATION_FAILED
            messages.add(failed.value.message)
        # The flag off: a healthy loopback receiver is refused alike, and never hears from the platform.
        with pytest.raises(InvalidInput) as refused:
            validator.validate(healthy.url, "EventGridSchema")
        messages.add(refused.value.message)
        assert messages == {ENDPOINT_VALIDATION_MESSAGE}
        assert healthy.hits == 0
        validator.validate(healthy.url, "EventGridSchema", allow_loopback=True)
        assert healthy.hits == 1


def test_a_delivery_is_not_redirected() -> None:
    ports = _Ports(InMemorySubscriptionStore(), InMemoryBlobStore())
    ports.blobs.ensure_container("deadletter")
    with LoopbackServer() as target, LoopbackServer(redirect("http://127.0.0.1:1/")) as first:
        with LoopbackServer(redirect(target.url)) as hop:
            ports.subscriptions.put_subscription(Subscription("acme", "sub", hop.url, max_delivery_attempts=1))
            broker = LocalEventBroker(
                lambda: ports,  # type: ignore[arg-type,return-value]
                key="k",
                dead_letters=ports.blobs,
                time_scale=3600,
                egress=EgressPolicy(allow_loopback=True),
            )
            broker.start()
            try:
                event = PlatformEvent(
                    "e2", "AIaaS.Job.Failed", "/tenants/acme/jobs/j", {}, "2026-12-01T00:00:00Z", "acme"
                )
                broker.accept([event])
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and broker.deliveries[0].status != "dead-lettered":
                    time.sleep(0.02)
            finally:
                broker.stop()
            assert broker.deliveries[0].last_error == "HTTP 302" and hop.hits == 1
        assert target.hits == 0 and first.hits == 0


def test_a_remote_card_cannot_raise_retries_or_timeouts() -> None:
    card = ModelCard(
        {
            "name": "r",
            "version": "1",
            "handler": "text",
            "runtime": "remote-oip",
            "inputTypes": [".txt"],
            "oip": {"maxRetries": 1000, "timeoutSeconds": 86_400},
        }
    )
    with LoopbackServer(answer(503, b'{"error": "upstream 10.0.0.5:8080 refused"}')) as down:
        card.raw["endpoint"] = down.url.removesuffix("/hook") + "/v2/models/r"
        predictor = RemoteOipPredictor(card, egress=EgressPolicy(allow_loopback=True), backoff_seconds=0.001)
        with pytest.raises(RemoteEndpointUnavailable) as failed:
            predictor.predict(["hello"])
        assert down.hits == 4  # one call and at most 3 retries, whatever the card says
    assert str(failed.value) == "the model endpoint failed 4 times"  # no address, status or body


def test_tls_goes_to_the_pinned_address_but_is_verified_against_the_name() -> None:
    trust, cert_files = ca_and_certificate("hooks.egress.test")
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    with LoopbackServer(answer(200, b"{}"), cert_files=cert_files) as server:
        client = EgressPolicy(allow_loopback=True, resolver=resolver).client(ssl_context=trust)
        url = f"https://hooks.egress.test:{server.port}/hook"
        assert send_bounded(client, "POST", url, max_bytes=1024, content=b"[]").status_code == 200
        assert server.host_headers == [f"hooks.egress.test:{server.port}"] and server.sni_names == ["hooks.egress.test"]
        assert lookups == ["hooks.egress.test"]

        # The same server under another name: the certificate does not match, so the call fails.
        other = EgressPolicy(allow_loopback=True, resolver=resolver).client(ssl_context=trust)
        with pytest.raises(httpx.ConnectError, match="certificate"):
            other.get(f"https://other.egress.test:{server.port}/hook")
        assert server.hits == 1


def test_the_client_refuses_a_trust_store_that_does_not_verify() -> None:
    import ssl

    lax = ssl.create_default_context()
    lax.check_hostname = False
    with pytest.raises(ValueError, match="verifies certificates"):
        EgressPolicy().client(ssl_context=lax)


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_a_delivery_refused_by_the_endpoint_is_dead_lettered_at_once(status: int) -> None:
    ports = _Ports(InMemorySubscriptionStore(), InMemoryBlobStore())
    ports.blobs.ensure_container("deadletter")
    with LoopbackServer(answer(status, b"{}")) as refusing:
        ports.subscriptions.put_subscription(Subscription("acme", "sub", refusing.url))
        broker = LocalEventBroker(
            lambda: ports,  # type: ignore[arg-type,return-value]
            key="k",
            dead_letters=ports.blobs,
            time_scale=3600,
            egress=EgressPolicy(allow_loopback=True),
        )
        broker.start()
        try:
            broker.accept(
                [PlatformEvent("e3", "AIaaS.Job.Failed", "/tenants/acme/jobs/j", {}, "2026-12-01T00:00:00Z", "acme")]
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and broker.deliveries[0].status != "dead-lettered":
                time.sleep(0.02)
        finally:
            broker.stop()
        assert broker.deliveries[0].status == "dead-lettered" and refusing.hits == 1
