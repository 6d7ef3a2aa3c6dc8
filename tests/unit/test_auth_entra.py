"""The Entra token verifier over the local issuer's documents (httpx's MockTransport: no socket)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from shared.adapters.entra import NEW_TENANTS_PER_MINUTE, REFRESH_SECONDS, EntraTokenVerifier
from shared.domain.errors import Unauthorized
from tests.oidc_issuer import AUDIENCE, OidcIssuer, refused_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> OidcIssuer:
    return OidcIssuer()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(issuer: OidcIssuer, clock: Clock) -> EntraTokenVerifier:
    http = httpx.Client(transport=issuer.mock_transport(), follow_redirects=False)
    return EntraTokenVerifier(issuer.base_url, AUDIENCE, http=http, clock=clock)


def tid() -> str:
    return str(uuid.uuid4())


def test_a_valid_token_gives_its_tid_actor_and_roles(issuer: OidcIssuer, verifier: EntraTokenVerifier) -> None:
    tenant = tid()
    identity = verifier.verify(issuer.token(tenant, oid="0000-oid", roles=["AIaaS.Reader", "Other"]))

    assert (identity.tid, identity.actor_id, identity.roles) == (tenant, "0000-oid", ("AIaaS.Reader", "Other"))


def test_without_oid_the_actor_is_the_subject(issuer: OidcIssuer, verifier: EntraTokenVerifier) -> None:
    assert verifier.verify(issuer.token(tid(), oid=None, sub="the-subject")).actor_id == "the-subject"


def test_keys_are_fetched_once_and_an_unknown_kid_refetches_at_most_once_a_minute(
    issuer: OidcIssuer, verifier: EntraTokenVerifier, clock: Clock
) -> None:
    tenant = tid()
    for _ in range(3):
        verifier.verify(issuer.token(tenant))
    assert issuer.fetches == [tenant]

    for _ in range(5):  # random kids: one refetch is allowed only after REFRESH_SECONDS
        with pytest.raises(Unauthorized):
            verifier.verify(issuer.token(tenant, kid=uuid.uuid4().hex))
    assert issuer.fetches == [tenant]

    rotated = issuer.rotate()
    with pytest.raises(Unauthorized):  # the new key is not fetched yet: still inside the minute
        verifier.verify(issuer.token(tenant, key=rotated))
    clock.now += REFRESH_SECONDS
    assert verifier.verify(issuer.token(tenant, key=rotated)).tid == tenant
    assert issuer.fetches == [tenant, tenant]


def test_cached_keys_keep_working_while_the_key_endpoint_is_down(
    issuer: OidcIssuer, verifier: EntraTokenVerifier, clock: Clock
) -> None:
    tenant = tid()
    verifier.verify(issuer.token(tenant))
    issuer.down = True
    clock.now += REFRESH_SECONDS
    with pytest.raises(Unauthorized):  # an unknown kid triggers a fetch that fails ...
        verifier.verify(issuer.token(tenant, kid="unknown"))

    assert verifier.verify(issuer.token(tenant)).tid == tenant  # ... and the cached keys still serve


def test_a_key_endpoint_down_on_first_load_refuses_and_retries_only_after_a_minute(
    issuer: OidcIssuer, verifier: EntraTokenVerifier, clock: Clock
) -> None:
    tenant = tid()
    issuer.down = True
    with pytest.raises(Unauthorized):
        verifier.verify(issuer.token(tenant))
    issuer.down = False
    with pytest.raises(Unauthorized):
        verifier.verify(issuer.token(tenant))
    clock.now += REFRESH_SECONDS

    assert verifier.verify(issuer.token(tenant)).tid == tenant


def test_new_tenants_that_may_trigger_a_fetch_are_bounded_per_minute(
    issuer: OidcIssuer, verifier: EntraTokenVerifier, clock: Clock
) -> None:
    for _ in range(NEW_TENANTS_PER_MINUTE):
        verifier.verify(issuer.token(tid()))
    late = tid()
    with pytest.raises(Unauthorized):
        verifier.verify(issuer.token(late))
    assert len(issuer.fetches) == NEW_TENANTS_PER_MINUTE
    clock.now += 60

    assert verifier.verify(issuer.token(late)).tid == late


def test_a_jwks_uri_on_another_host_or_another_issuer_in_the_metadata_is_not_trusted(clock: Clock) -> None:
    issuer = OidcIssuer()
    tenant = tid()
    for metadata in (
        {"issuer": f"{issuer.base_url}/{tenant}/v2.0", "jwks_uri": "http://attacker.invalid/keys"},
        {"issuer": "http://attacker.invalid/v2.0", "jwks_uri": f"{issuer.base_url}/{tenant}/discovery/v2.0/keys"},
    ):
        fetched: list[str] = []

        def handle(
            request: httpx.Request, metadata: dict[str, str] = metadata, fetched: list[str] = fetched
        ) -> httpx.Response:
            fetched.append(str(request.url))
            if request.url.path.endswith("openid-configuration"):
                return httpx.Response(200, json=metadata)
            return httpx.Response(200, json=issuer.respond(request.url.path)[1])

        verifier = EntraTokenVerifier(
            issuer.base_url, AUDIENCE, http=httpx.Client(transport=httpx.MockTransport(handle)), clock=clock
        )
        with pytest.raises(Unauthorized):
            verifier.verify(issuer.token(tenant))
        assert not any("attacker" in url for url in fetched)


def test_a_redirect_from_the_authority_is_not_followed(clock: Clock) -> None:
    issuer = OidcIssuer()
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        return httpx.Response(302, headers={"Location": "http://attacker.invalid/"})

    verifier = EntraTokenVerifier(
        issuer.base_url, AUDIENCE, http=httpx.Client(transport=httpx.MockTransport(handle)), clock=clock
    )
    with pytest.raises(Unauthorized):
        verifier.verify(issuer.token(tid()))
    assert "attacker.invalid" not in seen


def test_the_default_client_follows_no_redirect_and_bounds_its_timeouts() -> None:
    verifier = EntraTokenVerifier("https://login.microsoftonline.com", AUDIENCE)
    http = verifier._http

    assert http.follow_redirects is False
    assert http.timeout.connect is not None and http.timeout.read is not None and http.timeout.read <= 10


def test_every_forged_broken_or_foreign_token_is_refused(issuer: OidcIssuer, verifier: EntraTokenVerifier) -> None:
    tenant, other = tid(), tid()
    verifier.verify(issuer.token(tenant))  # the keys are cached: each case is refused on its own merits
    verifier.verify(issuer.token(other))
    tokens = refused_tokens(issuer, tenant, other)

    accepted = []
    for name, token in tokens.items():
        try:
            verifier.verify(token)
        except Unauthorized:
            continue
        accepted.append(name)
    assert accepted == [] and len(tokens) >= 20


@pytest.mark.parametrize(
    ("authority", "environment", "accepted"),
    [
        ("https://login.microsoftonline.com", "development", True),
        ("http://127.0.0.1:8400", "development", True),
        ("http://login.example.com", "development", False),
        ("http://127.0.0.1:8400", "production", False),
        ("https://login.microsoftonline.com?x=1", "development", False),
        ("not a url", "development", False),
    ],
)
def test_the_authority_is_https_unless_loopback_in_development(
    authority: str, environment: str, accepted: bool
) -> None:
    from pydantic import ValidationError

    from shared.config import Settings

    try:
        Settings(environment=environment, entra_authority=authority)  # type: ignore[arg-type]
    except (ValidationError, ValueError) as err:
        assert not accepted and "AIAAS_ENTRA_AUTHORITY" in str(err), err
        return
    assert accepted
