"""The whole local stack for end-to-end tests: stand-ins, API, watcher, broker and workers on free ports."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shared import bootstrap, cli
from shared.config import Settings
from shared.localhost.emulators import free_port
from shared.localhost.host import LocalHost
from tests.oidc_issuer import AUDIENCE as ENTRA_AUDIENCE
from tests.oidc_issuer import OidcIssuer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[OidcIssuer]:
    """The local OpenID issuer the stack trusts as its Entra authority (tests/oidc_issuer.py)."""
    issuer = OidcIssuer().start()
    try:
        yield issuer
    finally:
        issuer.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer) -> Iterator[LocalHost]:
    if not list((REPO / "build/models").glob("*/*/card.json")):
        pytest.fail("no model packages: run `make models` (make test does)")
    saved = dict(os.environ)
    settings = Settings(
        environment="development",
        api_port=free_port(),
        azurite_blob_port=free_port(),
        azurite_queue_port=free_port(),
        azurite_table_port=free_port(),
        cosmos_port=free_port(),
        data_dir=tmp_path_factory.mktemp("stack"),
        models_dir=REPO / "build/models",
        workers=2,
        # Event Grid's delivery clock, an hour per second: its retry schedule (10 s, 30 s, 1 min, ...) and the
        # day-long time to live run in seconds; a delivery answer is awaited 2 s instead of 30 s.
        event_time_scale=3600,
        event_delivery_timeout_seconds=2,
        entra_authority=oidc_issuer.base_url,
        entra_audience=ENTRA_AUDIENCE,
        # As behind Azure Functions' front end: tests that need a source of their own send X-Forwarded-For.
        behind_trusted_proxy=True,
        allow_loopback_endpoints=True,  # the tests' webhook receivers listen on loopback
        # Small shards, short locks and quick sweeps, so that splitting, redelivery after a crash and
        # the sweeper all happen within a test's patience.
        shard_bytes=256 * 1024,
        batch_size=250,
        queue_visibility_seconds=6,
        stall_seconds=10,
        sweep_interval_seconds=1,
        max_sweeps=10,
    )
    host = LocalHost(settings)
    host.start()
    try:
        yield host
    finally:
        host.stop()
        os.environ.clear()
        os.environ.update(saved)
        bootstrap.reset()


@pytest.fixture(scope="session")
def create_tenant(stack: LocalHost) -> Callable[[str], httpx.Client]:
    """Creates a tenant with the real CLI (`aiaas tenants create ID --json`); returns an API client as it.

    Through the CLI's entry point in this process, whose settings are the stack's (LocalHost put them in
    os.environ): a fresh `aiaas` process spends 1-3 s importing per tenant, a minute or more over the suite.
    test_identity and test_regions run the `aiaas` command itself.
    """

    def make(tenant_id: str) -> httpx.Client:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = cli.main(["tenants", "create", tenant_id, "--json"])
        assert code == 0, printed.getvalue()
        answer = json.loads(printed.getvalue())
        assert answer["tenantId"] == tenant_id
        return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {answer['apiKey']}"}, timeout=30)

    return make
