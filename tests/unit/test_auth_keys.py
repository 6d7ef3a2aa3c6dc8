"""Keys with roles, revocation, failed-authentication throttling, generic refusals and the audit log, over HTTP
(TestClient) on the fakes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.api.auth import AuthOptions, FailedAuthThrottle
from shared.domain.audit import PLATFORM_PARTITION
from shared.domain.tenants import ADMIN, READER, SUBMITTER
from shared.services.platform import Platform
from shared.services.tenants import create_key
from tests.fakes import MODEL_NAME, InMemoryAuditLog, add_tenant
from tests.oidc_issuer import OidcIssuer


def auth(key: str, source: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if source:
        headers["X-Forwarded-For"] = source
    return headers


@pytest.fixture
def admin_key(platform: Platform) -> str:
    return create_key(platform, "acme", "ops", ADMIN)[1]


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def audit_of(platform: Platform, tenant_id: str) -> list[Any]:
    log = platform.audit
    assert isinstance(log, InMemoryAuditLog)
    return [e for e in log.entries if e.tenant_id == tenant_id]


# Keys


def test_keys_are_created_listed_without_secrets_and_revoked(client: TestClient, admin_key: str) -> None:
    created = client.post("/api/v1/keys", json={"name": "ci reader", "role": READER}, headers=auth(admin_key))
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "key", "name", "role", "createdAt"}
    assert (body["name"], body["role"]) == ("ci reader", READER) and body["key"].startswith("aiaas_acme.")

    listed = client.get("/api/v1/keys", headers=auth(admin_key)).json()["items"]
    assert body["id"] in [k["id"] for k in listed]
    assert all(set(k) == {"id", "name", "role", "createdAt"} for k in listed)
    assert body["key"] not in str(listed) and body["key"].rsplit(".", 1)[1] not in str(listed)

    assert client.get("/api/v1/jobs", headers=auth(body["key"])).status_code == 200
    assert client.delete(f"/api/v1/keys/{body['id']}", headers=auth(admin_key)).status_code == 204

    refused = client.get("/api/v1/jobs", headers=auth(body["key"]))
    assert refused.status_code == 401
    assert client.delete(f"/api/v1/keys/{body['id']}", headers=auth(admin_key)).status_code == 404


def test_a_revoked_key_is_refused_by_every_api_process_at_once(platform: Platform, admin_key: str) -> None:
    first, second = (TestClient(create_app(lambda: platform), raise_server_exceptions=False) for _ in range(2))
    key = first.post("/api/v1/keys", json={"name": "short-lived", "role": SUBMITTER}, headers=auth(admin_key)).json()
    assert second.get("/api/v1/jobs", headers=auth(key["key"])).status_code == 200  # seen by the second process

    assert first.delete(f"/api/v1/keys/{key['id']}", headers=auth(admin_key)).status_code == 204

    assert second.get("/api/v1/jobs", headers=auth(key["key"])).status_code == 401


def test_a_key_with_a_wrong_secret_or_of_another_tenant_is_refused(
    platform: Platform, client: TestClient, admin_key: str
) -> None:
    globex = add_tenant(platform, "globex")
    tenant, key_id, secret = admin_key.removeprefix("aiaas_").split(".")
    forged = [
        f"aiaas_{tenant}.{key_id}.{'A' * len(secret)}",
        f"aiaas_globex.{key_id}.{secret}",  # acme's key id and secret under globex's name
        f"aiaas_{tenant}.{globex.split('.')[1]}.{globex.split('.')[2]}",  # globex's key under acme's name
    ]
    for key in forged:
        assert client.get("/api/v1/jobs", headers=auth(key)).status_code == 401, key


@pytest.mark.parametrize(
    "body",
    [{"name": "x", "role": "AIaaS.Owner"}, {"name": "", "role": READER}, {"name": "x" * 65, "role": READER}, {}],
)
def test_a_bad_key_request_is_400(client: TestClient, admin_key: str, body: dict[str, Any]) -> None:
    assert client.post("/api/v1/keys", json=body, headers=auth(admin_key)).status_code == 400


# Refusals say nothing about which check failed


def test_every_refusal_has_one_message_per_status_and_the_reason_only_in_the_log(
    platform: Platform, client: TestClient, admin_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    reader = create_key(platform, "acme", "r", READER)[1]
    unauthorized = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        auth("garbage"),
        auth("aiaas_nobody.0123456789abcdef0123456789abcdef." + "A" * 43),
        auth(admin_key[:-2] + "xx"),
        auth(OidcIssuer().token("0b6e0a3c-1f1e-4f44-9d3b-7d5c2b1a0e9f")),  # Entra is off in this app
    ]
    with caplog.at_level(logging.INFO, logger="shared.api.app"):
        bodies = [client.get("/api/v1/jobs", headers=h).json() for h in unauthorized]
        forbidden = client.post("/api/v1/keys", json={"name": "n", "role": READER}, headers=auth(reader))

    assert all(b == {"error": {"code": "Unauthorized", "message": "the credential is not valid"}} for b in bodies)
    assert forbidden.json() == {"error": {"code": "Forbidden", "message": "not allowed"}}
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(reasons) == len(unauthorized) + 1 and len(set(reasons)) == len(reasons) - 1  # two: no bearer
    assert not any(admin_key[:-2] in reason or reader in reason for reason in reasons)


# Failed authentications are throttled per source, before any store read


class CountingTenants:
    def __init__(self, inner: Any) -> None:
        self.inner, self.reads = inner, 0

    def get_tenant(self, tenant_id: str) -> Any:
        self.reads += 1
        return self.inner.get_tenant(tenant_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_source_over_the_failure_limit_gets_429_before_any_store_read(platform: Platform, admin_key: str) -> None:
    counting = CountingTenants(platform.tenants)
    platform.tenants = counting  # type: ignore[assignment]
    options = AuthOptions(behind_trusted_proxy=True, failure_limit=5, failure_window_seconds=60)
    client = TestClient(create_app(lambda: platform, auth=options), raise_server_exceptions=False)
    guess = "aiaas_acme.0123456789abcdef0123456789abcdef." + "A" * 43

    assert [client.get("/api/v1/jobs", headers=auth(guess, "198.51.100.7")).status_code for _ in range(5)] == [401] * 5
    reads = counting.reads
    throttled = [client.get("/api/v1/jobs", headers=auth(key, "198.51.100.7")) for key in (guess, admin_key)]

    assert [r.status_code for r in throttled] == [429, 429]  # even the right key: the source is throttled
    assert all(int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "RateLimited" for r in throttled)
    assert counting.reads == reads  # no store read for a throttled source
    other = client.get("/api/v1/jobs", headers=auth(admin_key, "198.51.100.8"))
    assert other.status_code == 200  # another source is not affected
    # Only the last X-Forwarded-For entry counts (the one the front end appended): a client cannot pick its source.
    assert client.get("/api/v1/jobs", headers=auth(admin_key, "198.51.100.8, 198.51.100.7")).status_code == 429


def test_x_forwarded_for_is_ignored_unless_the_platform_is_behind_a_trusted_proxy(
    platform: Platform, admin_key: str
) -> None:
    client = TestClient(create_app(lambda: platform, auth=AuthOptions(failure_limit=2)), raise_server_exceptions=False)
    for source in ("203.0.113.1", "203.0.113.2"):
        assert client.get("/api/v1/jobs", headers=auth("garbage", source)).status_code == 401

    # Both failures counted against the peer itself: spoofing the header does not buy fresh attempts.
    assert client.get("/api/v1/jobs", headers=auth(admin_key, "203.0.113.3")).status_code == 429


def test_successes_do_not_count_and_the_window_ends() -> None:
    now = [0.0]
    throttle = FailedAuthThrottle(3, 60, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("a")
    assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == 60
    now[0] = 59.5
    assert throttle.retry_after("a") == 1
    now[0] = 60.0
    assert throttle.retry_after("a") is None


# The audit log


def test_state_changes_and_refusals_are_audited_with_the_request_id(
    platform: Platform, client: TestClient, admin_key: str
) -> None:
    submitter = create_key(platform, "acme", "s", SUBMITTER)
    upload = client.post("/api/v1/uploads", json={"model": MODEL_NAME, "filename": "a.csv"}, headers=auth(submitter[1]))
    failed = client.post(
        "/api/v1/jobs", json={"model": MODEL_NAME, "blobPath": "inbox/nope.csv"}, headers=auth(submitter[1])
    )
    denied = client.post("/api/v1/keys", json={"name": "n", "role": ADMIN}, headers=auth(submitter[1]))
    refused = client.post("/api/v1/jobs", json={}, headers=auth(admin_key[:-2] + "xx"))
    read = client.get("/api/v1/jobs", headers=auth(admin_key))
    infer = client.post(f"/api/v2/models/{MODEL_NAME}/infer", json={"inputs": []}, headers=auth(submitter[1]))

    assert (upload.status_code, failed.status_code, denied.status_code, refused.status_code) == (201, 400, 403, 401)
    assert read.status_code == 200
    entries = {e.request_id: e for e in audit_of(platform, "acme")}
    assert read.headers["x-request-id"] not in entries  # a read changes nothing
    assert infer.headers["x-request-id"] not in entries  # nor does an online prediction, though it is a POST
    expected = [
        (upload, "uploads.create", "succeeded", "key", submitter[0].key_id),
        (failed, "jobs.submit", "failed", "key", submitter[0].key_id),
        (denied, "keys.create", "denied", "key", submitter[0].key_id),
        (refused, "jobs.submit", "denied", "key", admin_key.split(".")[1]),
    ]
    for response, action, outcome, kind, actor in expected:
        entry = entries[response.headers["x-request-id"]]
        assert (entry.action, entry.outcome, entry.actor_kind, entry.actor_id) == (action, outcome, kind, actor)
        assert entry.status_code == response.status_code and entry.target == response.request.url.path

    listed = client.get("/api/v1/audit", headers=auth(admin_key)).json()
    assert [i["requestId"] for i in listed["items"]][:4] == [
        r.headers["x-request-id"] for r in expected_order(expected)
    ]
    assert set(listed["items"][0]) == {
        "id",
        "time",
        "actor",
        "action",
        "target",
        "outcome",
        "requestId",
        "statusCode",
        "details",  # null unless the action recorded figures (a rollout decision)
    }


def expected_order(expected: list[tuple[Any, ...]]) -> list[Any]:
    return [row[0] for row in reversed(expected)]


def test_refusals_that_name_no_known_tenant_go_to_the_platform_partition(
    platform: Platform, client: TestClient
) -> None:
    for headers in ({}, auth("garbage"), auth("aiaas_nobody.0123456789abcdef0123456789abcdef." + "A" * 43)):
        client.delete("/api/v1/subscriptions/0123456789abcdef0123456789abcdef", headers=headers)

    assert len(audit_of(platform, PLATFORM_PARTITION)) == 3
    assert audit_of(platform, "nobody") == []


def test_the_audit_log_filters_pages_and_is_admin_only(platform: Platform, client: TestClient, admin_key: str) -> None:
    for name in ("a", "b", "c"):
        client.post("/api/v1/keys", json={"name": name, "role": READER}, headers=auth(admin_key))
    client.post("/api/v1/uploads", json={"model": MODEL_NAME, "filename": "a.csv"}, headers=auth(admin_key))

    created = client.get("/api/v1/audit?action=keys.create&limit=2", headers=auth(admin_key)).json()
    assert [i["action"] for i in created["items"]] == ["keys.create"] * 2 and created["continuationToken"]
    rest = client.get(
        f"/api/v1/audit?action=keys.create&limit=2&continuationToken={created['continuationToken']}",
        headers=auth(admin_key),
    ).json()
    assert len(rest["items"]) == 1 and rest["continuationToken"] is None
    assert client.get("/api/v1/audit?since=2999-01-01T00:00:00Z", headers=auth(admin_key)).json()["items"] == []
    for bad in ("since=yesterday", "action=DROP%20TABLE", "continuationToken=bogus", "limit=0"):
        assert client.get(f"/api/v1/audit?{bad}", headers=auth(admin_key)).status_code == 400, bad

    reader = create_key(platform, "acme", "r", READER)[1]
    assert client.get("/api/v1/audit", headers=auth(reader)).status_code == 403


def test_no_api_changes_or_deletes_an_audit_entry(platform: Platform, client: TestClient, admin_key: str) -> None:
    client.post("/api/v1/keys", json={"name": "a", "role": READER}, headers=auth(admin_key))
    before = list(audit_of(platform, "acme"))
    entry_id = before[0].entry_id

    answers = [
        client.request(method, path, headers=auth(admin_key), json={})
        for method in ("PUT", "PATCH", "DELETE", "POST")
        for path in ("/api/v1/audit", f"/api/v1/audit/{entry_id}")
    ]

    assert {r.status_code for r in answers} <= {404, 405}
    assert audit_of(platform, "acme")[: len(before)] == before


def test_a_key_costs_one_tenant_read_per_request_and_no_cache_outlives_a_revocation(
    platform: Platform, admin_key: str
) -> None:
    counting = CountingTenants(platform.tenants)
    platform.tenants = counting  # type: ignore[assignment]
    client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)

    for _ in range(3):
        assert client.get("/api/v1/subscriptions", headers=auth(admin_key)).status_code == 200

    assert counting.reads == 3


@pytest.mark.parametrize(
    ("forwarded", "source"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("203.0.113.5:51234", "203.0.113.5"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("10.0.0.1, 203.0.113.5", "203.0.113.5"),
        ("not-an-address", "testclient"),
    ],
)
def test_the_source_behind_the_front_end_is_its_last_forwarded_address(forwarded: str, source: str) -> None:
    from starlette.requests import Request

    from shared.api.auth import client_address

    scope = {
        "type": "http",
        "headers": [(b"x-forwarded-for", forwarded.encode())],
        "client": ("testclient", 50000),
    }

    assert client_address(Request(scope), behind_trusted_proxy=True) == source
    assert client_address(Request(scope), behind_trusted_proxy=False) == "testclient"


# Entra ID tokens through the app (the issuer's documents through httpx's MockTransport)


@pytest.fixture
def entra(platform: Platform) -> tuple[TestClient, OidcIssuer, str]:
    import uuid

    import httpx

    from shared.services.tenants import map_entra_tenant
    from tests.oidc_issuer import AUDIENCE

    issuer = OidcIssuer()
    app = create_app(lambda: platform, auth=AuthOptions(entra_authority=issuer.base_url, entra_audience=AUDIENCE))
    app.state.authenticate.verifier._http = httpx.Client(transport=issuer.mock_transport())
    tid = str(uuid.uuid4())
    map_entra_tenant(platform, tid, "acme")
    return TestClient(app, raise_server_exceptions=False), issuer, tid


def test_a_token_acts_for_its_mapped_tenant_with_its_highest_role(
    platform: Platform, entra: tuple[TestClient, OidcIssuer, str]
) -> None:
    client, issuer, tid = entra
    token = issuer.token(tid, oid="actor-1", roles=["AIaaS.Reader", "AIaaS.Admin"])

    created = client.post("/api/v1/keys", json={"name": "from-entra", "role": READER}, headers=auth(token))

    assert created.status_code == 201
    entry = audit_of(platform, "acme")[-1]
    assert (entry.action, entry.actor_kind, entry.actor_id) == ("keys.create", "entra", "actor-1")


def test_a_refused_token_is_filed_under_the_tenant_its_tid_maps_to_or_the_platform(
    platform: Platform, entra: tuple[TestClient, OidcIssuer, str]
) -> None:
    import uuid

    client, issuer, tid = entra
    forged = issuer.token(tid, aud="api://other")
    unmapped = issuer.token(str(uuid.uuid4()), roles=["AIaaS.Admin"])

    assert client.get("/api/v1/jobs", headers=auth(forged)).status_code == 401
    assert client.get("/api/v1/jobs", headers=auth(unmapped)).json() == {
        "error": {"code": "Forbidden", "message": "not allowed"}
    }
    assert [(e.actor_kind, e.outcome) for e in audit_of(platform, "acme")] == [("entra", "denied")]
    assert [e.status_code for e in audit_of(platform, PLATFORM_PARTITION)] == [403]


def test_a_busy_store_while_filing_a_refusal_still_answers_the_refusal(
    platform: Platform, entra: tuple[TestClient, OidcIssuer, str]
) -> None:
    from shared.domain.errors import ServiceUnavailable

    client, issuer, tid = entra

    def busy(tid: str) -> str:
        raise ServiceUnavailable("the platform's database is throttling requests")

    platform.identities.tenant_for = busy  # type: ignore[method-assign]
    answer = client.get("/api/v1/jobs", headers=auth(issuer.token(tid, aud="api://other")))

    assert answer.status_code == 401 and answer.json()["error"]["message"] == "the credential is not valid"
    assert len(audit_of(platform, PLATFORM_PARTITION)) == 1
