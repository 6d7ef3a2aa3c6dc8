"""The egress policy: which addresses the platform calls for a tenant, and that it connects to nothing else.

No socket is opened here: literals are judged without a lookup, and clients get a connector stub that records
where it was asked to connect. tests/integration/test_egress_calls.py covers calls to real loopback servers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.adapters.egress import (
    MAX_TOTAL_SECONDS,
    REFUSED_MESSAGE,
    EgressPolicy,
    EgressRefusedError,
    EndpointRefused,
    Timeouts,
)
from shared.config import Settings
from shared.domain.errors import InvalidInput
from shared.domain.events import PlatformEvent, Subscription
from shared.domain.models import ModelCard
from shared.inference.remote import RemoteEndpointUnavailable, RemoteOipPredictor
from shared.localhost.broker import UNREACHABLE, LocalEventBroker
from tests.egress_servers import RecordingConnector
from tests.fakes import InMemoryBlobStore, InMemorySubscriptionStore


def no_resolver(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"the policy resolved {host!r}: a literal must be judged without any lookup")


class ScriptedResolver:
    """Answers each lookup with the next scripted list of addresses; counts the lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        return self.answers.pop(0)


# Literal forms, refused before any lookup or socket, whatever the loopback flag says about loopback itself

ALWAYS_REFUSED = [
    "https://10.0.0.1/hook",
    "https://10.1/hook",  # short form of 10.0.0.1
    "https://172.16.5.4/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",  # carrier-grade NAT
    "https://169.254.169.254/metadata/instance",  # IMDS
    "https://0xa9fea9fe/latest/meta-data",  # IMDS in hex
    "https://2852039166/latest/meta-data",  # IMDS in decimal
    "https://168.63.129.16/machine",  # Azure's wire server, a 'global' address
    "https://[fd00:ec2::254]/latest",  # AWS IPv6 IMDS
    "https://[fc00::1]/hook",
    "https://[fe80::1]/hook",
    "https://[::ffff:169.254.169.254]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
    "https://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
    "https://[2001::1]/hook",  # Teredo
    "https://0.0.0.0/hook",
    "https://0/hook",
    "https://[::]/hook",
    "https://224.0.0.1/hook",
    "https://[ff02::1]/hook",
    "https://255.255.255.255/hook",
    "https://240.0.0.1/hook",
    "https://203.0.113.5/hook",  # documentation: not global unicast either
    "https://198.18.0.1/hook",  # benchmarking
    "https://1.2.3.999/hook",  # numeric but no address: a resolver might read it anyway
    "https://08.1.1.1/hook",
]
LOOPBACK = [
    "https://127.0.0.1/hook",
    "https://127.0.0.1./hook",
    "https://127.9.8.7:8443/hook",
    "https://2130706433/hook",
    "https://0x7f000001/hook",
    "https://0x7F.0.0.1/hook",
    "https://017700000001/hook",
    "https://127.1/hook",
    "https://[::1]:9000/hook",
    "https://localhost/hook",
    "https://LOCALHOST./hook",
    "https://api.localhost/hook",
]
MAPPED_LOOPBACK = [  # loopback in IPv6 clothing: refused even with the flag (only 127/8 and ::1 are allowed)
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:7f00:1]/hook",
    "https://[64:ff9b::7f00:1]/hook",
    "https://[::127.0.0.1]/hook",
    "https://[2002:7f00:1::]/hook",
]
MALFORMED = [
    "http://9.9.9.9/hook",  # plain http beyond loopback
    "ftp://9.9.9.9/hook",
    "https://user:pw@9.9.9.9/hook",
    "https://token@9.9.9.9/hook",
    "/relative/hook",
    "not a url",
    "https://[fe80::1%25eth0]/hook",
    "https://9.9.9.9:99999/hook",
    "",
]


@pytest.mark.parametrize("url", ALWAYS_REFUSED + LOOPBACK + MAPPED_LOOPBACK + MALFORMED)
def test_refused_without_a_lookup_and_with_one_generic_message(url: str) -> None:
    with pytest.raises(EndpointRefused) as refused:
        EgressPolicy(allow_loopback=False, resolver=no_resolver).check_url(url)
    assert refused.value.message == REFUSED_MESSAGE and refused.value.code == "InvalidEndpoint"
    assert isinstance(refused.value, InvalidInput)  # a 400 at the API


@pytest.mark.parametrize("url", ALWAYS_REFUSED + MAPPED_LOOPBACK + MALFORMED)
def test_the_loopback_flag_lets_through_loopback_and_nothing_else(url: str) -> None:
    with pytest.raises(EndpointRefused):
        EgressPolicy(allow_loopback=True, resolver=no_resolver).check_url(url)


@pytest.mark.parametrize("url", [u for u in LOOPBACK if "localhost" not in u.lower()])
def test_loopback_literals_pass_with_the_flag_as_the_address_they_mean(url: str) -> None:
    checked = EgressPolicy(allow_loopback=True, resolver=no_resolver).check_url(url)
    assert all(address.is_loopback for address in checked.addresses)
    assert checked.addresses[0].version == (6 if "[::1]" in url else 4)


def test_plain_http_is_for_loopback_with_the_flag_only() -> None:
    loopback = EgressPolicy(allow_loopback=True, resolver=ScriptedResolver(["127.0.0.1", "::1"]))
    assert loopback.check_url("http://127.0.0.1:7071/hook").port == 7071
    assert loopback.check_url("http://localhost:7071/hook").addresses[0].is_loopback
    with pytest.raises(EndpointRefused):
        EgressPolicy(allow_loopback=False, resolver=no_resolver).check_url("http://127.0.0.1:7071/hook")


@pytest.mark.parametrize("url", ["https://9.9.9.9/hook", "https://[2606:4700::1111]:8443/hook"])
def test_global_unicast_literals_pass_without_a_lookup(url: str) -> None:
    checked = EgressPolicy(resolver=no_resolver).check_url(url)
    assert [a.is_global for a in checked.addresses] == [True]


def test_a_name_is_refused_when_any_of_its_addresses_is() -> None:
    mixed = ScriptedResolver(["9.9.9.9", "10.0.0.7"])
    with pytest.raises(EndpointRefused):
        EgressPolicy(resolver=mixed).check_url("https://hooks.example.org/in")
    assert mixed.lookups == ["hooks.example.org"]

    public = ScriptedResolver(["9.9.9.9", "2606:4700::1111"])
    checked = EgressPolicy(resolver=public).check_url("https://Hooks.Example.org./in")
    assert [str(a) for a in checked.addresses] == ["9.9.9.9", "2606:4700::1111"]


def test_a_name_that_does_not_resolve_is_refused_alike() -> None:
    def failing(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    with pytest.raises(EndpointRefused) as refused:
        EgressPolicy(resolver=failing).check_url("https://nowhere.example.org/in")
    assert refused.value.message == REFUSED_MESSAGE


def test_a_localhost_name_is_refused_without_the_flag_before_any_lookup() -> None:
    for url in ("https://localhost:8443/", "https://x.localhost/", "http://localhost./"):
        with pytest.raises(EndpointRefused):
            EgressPolicy(resolver=no_resolver).check_url(url)


def test_registration_can_check_without_resolving() -> None:
    policy = EgressPolicy(resolver=no_resolver)
    assert policy.check_url("https://models.example.com/v2/models/m", resolve=False).addresses == ()
    with pytest.raises(EndpointRefused):
        policy.check_url("https://10.0.0.1/v2/models/m", resolve=False)


# Pinned connections: the checked address is the one connected to, and nothing else is ever resolved


def test_the_connection_goes_to_the_checked_address_and_a_rebound_name_is_refused() -> None:
    # First lookup: a global address (9.9.9.9; never reached: the connector opens no socket). Second: loopback.
    resolver = ScriptedResolver(["9.9.9.9"], ["127.0.0.1"])
    connector = RecordingConnector()
    client = EgressPolicy(resolver=resolver).client(connector=connector)

    with pytest.raises(httpx.ConnectError):
        client.post("https://rebind.example.org:8443/hook", content=b"{}")
    assert connector.calls == [("9.9.9.9", 8443)]  # the checked address, never the name again
    assert resolver.lookups == ["rebind.example.org"]

    with pytest.raises(EgressRefusedError):  # the rebound answer is refused before any connect
        client.post("https://rebind.example.org:8443/hook", content=b"{}")
    assert connector.calls == [("9.9.9.9", 8443)]
    assert resolver.lookups == ["rebind.example.org", "rebind.example.org"]


def test_a_refused_literal_never_reaches_the_socket_layer() -> None:
    connector = RecordingConnector()
    client = EgressPolicy(allow_loopback=True, resolver=no_resolver).client(connector=connector)
    for url in ("https://169.254.169.254/", "http://[::ffff:127.0.0.1]:80/", "https://10.1/", "http://0x0a000001/"):
        with pytest.raises(EgressRefusedError):
            client.get(url)
    assert connector.calls == []


def test_no_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    connector = RecordingConnector()
    client = EgressPolicy(resolver=ScriptedResolver(["9.9.9.9"])).client(connector=connector)
    with pytest.raises(httpx.ConnectError):
        client.get("https://hooks.example.org/in")
    assert connector.calls == [("9.9.9.9", 443)]


def test_timeouts_are_clamped_to_the_ceilings() -> None:
    clamped = Timeouts(connect=600, read=3600, total=86_400).clamped()
    assert clamped.total == MAX_TOTAL_SECONDS and clamped.read <= MAX_TOTAL_SECONDS and clamped.connect <= 10


# The broker: a refused address is never connected to and fails like a closed port


@dataclass
class _Ports:
    subscriptions: InMemorySubscriptionStore
    blobs: InMemoryBlobStore


def test_a_delivery_to_a_refused_address_never_connects_and_dead_letters_generically() -> None:
    ports = _Ports(InMemorySubscriptionStore(), InMemoryBlobStore())
    ports.blobs.ensure_container("deadletter")
    for index, url in enumerate(["http://127.0.0.1:9/hook", "https://169.254.169.254/hook", "https://[::1]/h"]):
        ports.subscriptions.put_subscription(Subscription("acme", f"sub{index}", url, max_delivery_attempts=2))
    connector = RecordingConnector()
    broker = LocalEventBroker(
        lambda: ports,  # type: ignore[arg-type,return-value]
        key="k",
        dead_letters=ports.blobs,
        time_scale=3600,
        egress=EgressPolicy(allow_loopback=False),
        connector=connector,
    )
    broker.start()
    try:
        event = PlatformEvent(
            id="e1",
            event_type="AIaaS.Job.Succeeded",
            subject="/tenants/acme/jobs/j1",
            data={"jobId": "j1"},
            event_time="2026-12-01T00:00:00Z",
            topic="acme",
        )
        assert broker.accept([event]) == 3
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(d.status != "dead-lettered" for d in broker.deliveries):
            time.sleep(0.02)
    finally:
        broker.stop()
    assert [d.status for d in broker.deliveries] == ["dead-lettered"] * 3
    assert {d.last_error for d in broker.deliveries} == {UNREACHABLE}
    assert connector.calls == []
    assert len(list(ports.blobs.list_blobs("deadletter"))) == 3


# Remote models: no card raises the retries or the timeout; failures recorded generically


def test_a_remote_model_on_a_refused_address_is_never_called() -> None:
    card = ModelCard(
        {
            "name": "r",
            "version": "1",
            "handler": "text",
            "runtime": "remote-oip",
            "inputTypes": [".txt"],
            "endpoint": "https://169.254.169.254/v2/models/r",
            "oip": {"maxRetries": 0},
        }
    )
    connector = RecordingConnector()
    predictor = RemoteOipPredictor(card, egress=EgressPolicy(resolver=no_resolver), connector=connector)
    with pytest.raises(RemoteEndpointUnavailable) as failed:
        predictor.predict(["hello"])
    assert connector.calls == [] and "169.254" not in str(failed.value)


# The setting


def test_loopback_endpoints_are_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="AIAAS_ALLOW_LOOPBACK_ENDPOINTS is for development only"):
        Settings(
            environment="production",
            allow_loopback_endpoints=True,
            storage_account_name="acct",
            cosmos_endpoint="https://acct.documents.azure.com/",
            eventgrid_endpoint="https://domain.westeurope-1.eventgrid.azure.net/api/events",
            public_api_url="https://app.azurewebsites.net/api",
        )
    assert Settings(environment="development").allow_loopback_endpoints is False
    assert Settings(environment="development", allow_loopback_endpoints=True).allow_loopback_endpoints is True


def test_a_resolver_that_hangs_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import threading

    from shared.adapters import egress

    release = threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        raise OSError("released")

    monkeypatch.setattr(egress, "RESOLVE_SECONDS", 0.05)
    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        with pytest.raises(EndpointRefused):
            EgressPolicy().check_url("https://slow-dns.example.org/hook")
    finally:
        release.set()


def test_the_reason_is_logged_server_side_without_the_urls_secrets(caplog: pytest.LogCaptureFixture) -> None:
    url = "https://10.0.0.1/workflows/1/invoke?api-version=2016-10-01&sig=s3cr3t"
    with caplog.at_level("INFO", logger="shared.adapters.egress"), pytest.raises(EndpointRefused) as refused:
        EgressPolicy(resolver=no_resolver).check_url(url)
    assert "10.0.0.1 is private" in caplog.text and "s3cr3t" not in caplog.text
    assert "10.0.0.1" not in refused.value.message


@pytest.mark.parametrize(("flag", "expected"), [(None, False), ("false", False), ("true", True)])
def test_the_api_allows_loopback_webhooks_by_the_setting_not_by_being_in_development(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, expected: bool
) -> None:
    import shared.api.app
    from functions.http_api import LazyAsgiApp
    from shared.config import get_settings

    built: dict[str, Any] = {}
    monkeypatch.setattr(shared.api.app, "create_app", lambda factory, **options: built.update(options))
    monkeypatch.setenv("AIAAS_ENVIRONMENT", "development")
    if flag is None:
        monkeypatch.delenv("AIAAS_ALLOW_LOOPBACK_ENDPOINTS", raising=False)
    else:
        monkeypatch.setenv("AIAAS_ALLOW_LOOPBACK_ENDPOINTS", flag)
    get_settings.cache_clear()
    try:
        LazyAsgiApp()._build()
    finally:
        get_settings.cache_clear()
    assert built["allow_loopback_webhooks"] is expected
