"""The HTTP API over the fakes: auth, tenant isolation, JSON errors (never 422/500 for bad input), paging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.egress import ENDPOINT_VALIDATION_MESSAGE
from shared.domain.tenants import ADMIN
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.queries import encode_token
from shared.services.shards import run_shard
from shared.services.tenants import create_key
from tests.fakes import MODEL_NAME, Fakes, add_tenant, sample_bytes, upload


@pytest.fixture
def keys(platform: Platform) -> dict[str, str]:
    """API keys of tenants acme (created by the platform fixture: re-keyed here) and globex."""
    return {"acme": _rekey(platform, "acme"), "globex": add_tenant(platform, "globex")}


def _rekey(platform: Platform, tenant_id: str) -> str:
    return create_key(platform, tenant_id, "second", ADMIN)[1]


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def make_job(platform: Platform, tenant_id: str, name: str, *, rows: int = 5, run: bool = True) -> str:
    lines = sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)[:rows]
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, tenant_id, path, upload(platform, tenant_id, path, b"".join(lines)))
    assert job is not None
    if run:
        for message in platform.queue.drain():  # type: ignore[attr-defined]
            run_shard(platform, message)
    return job.job_id


# Authentication


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
        pytest.param({"Authorization": "Bearer not-a-key"}, id="garbage"),
        pytest.param({"Authorization": "Bearer aiaas_acme.wrong-secret"}, id="wrong-secret"),
        pytest.param({"Authorization": "Bearer aiaas_nobody.secret"}, id="unknown-tenant"),
    ],
)
def test_a_request_without_a_valid_key_is_401_with_a_json_error(
    client: TestClient, keys: dict[str, str], headers: dict[str, str]
) -> None:
    for path in ("/api/v1/models", "/api/v1/jobs", "/api/v1/subscriptions"):
        response = client.get(path, headers=headers)
        assert_error(response, 401, "Unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.post("/api/v1/uploads", headers=headers, json={"model": MODEL_NAME, "filename": "a.csv"}), 401)


def test_a_suspended_tenants_key_is_refused(platform: Platform, client: TestClient, keys: dict[str, str]) -> None:
    tenant = platform.tenants.get_tenant("globex")
    tenant.status = "suspended"
    platform.tenants.replace_tenant(tenant)

    assert_error(client.get("/api/v1/models", headers=auth(keys["globex"])), 401, "Unauthorized")


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}


def test_an_unknown_route_is_a_json_404(client: TestClient, keys: dict[str, str]) -> None:
    assert_error(client.get("/api/v1/nothing-here", headers=auth(keys["acme"])), 404, "NotFound")


# Tenant isolation


def test_another_tenants_job_and_results_are_404_exactly_like_a_missing_job(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    job_id = make_job(platform, "acme", "rows.jsonl")
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth(keys["acme"])).status_code == 200
    missing = "0" * len(job_id)

    for suffix in ("", "/results"):
        theirs = assert_error(client.get(f"/api/v1/jobs/{job_id}{suffix}", headers=auth(keys["globex"])), 404)
        nobodys = assert_error(client.get(f"/api/v1/jobs/{missing}{suffix}", headers=auth(keys["globex"])), 404)
        assert theirs["code"] == nobodys["code"] == "NotFound"
        assert theirs["message"].replace(job_id, "<id>") == nobodys["message"].replace(missing, "<id>")
    listed = client.get("/api/v1/jobs", headers=auth(keys["globex"])).json()
    assert listed == {"items": [], "continuationToken": None}


def test_another_tenants_subscription_is_404_and_cannot_be_deleted(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    created = client.post(
        "/api/v1/subscriptions", headers=auth(keys["acme"]), json={"endpointUrl": "https://hooks.example.org/a"}
    )
    assert created.status_code == 201, created.text
    sub_id = created.json()["subscriptionId"]
    missing = "f" * len(sub_id)

    theirs = assert_error(client.get(f"/api/v1/subscriptions/{sub_id}", headers=auth(keys["globex"])), 404)
    nobodys = assert_error(client.get(f"/api/v1/subscriptions/{missing}", headers=auth(keys["globex"])), 404)
    assert theirs["message"].replace(sub_id, "<id>") == nobodys["message"].replace(missing, "<id>")
    assert_error(client.delete(f"/api/v1/subscriptions/{sub_id}", headers=auth(keys["globex"])), 404, "NotFound")
    assert client.get("/api/v1/subscriptions", headers=auth(keys["globex"])).json() == {"items": []}

    still = client.get(f"/api/v1/subscriptions/{sub_id}", headers=auth(keys["acme"]))
    assert still.status_code == 200 and still.json()["subscriptionId"] == sub_id
    assert platform.subscriptions.get_subscription("acme", sub_id).endpoint_url == "https://hooks.example.org/a"


def test_a_job_cannot_be_submitted_over_another_tenants_blob(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    upload(platform, "acme", "data/rows.jsonl", b'{"a": 1}\n')

    response = client.post(
        "/api/v1/jobs", headers=auth(keys["globex"]), json={"model": MODEL_NAME, "blobPath": "data/rows.jsonl"}
    )

    assert_error(response, 400, "BlobNotFound")


# Uploads and jobs


def test_post_uploads_returns_a_url_for_a_blob_under_the_models_inbox(
    fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/uploads", headers=auth(keys["acme"]), json={"model": MODEL_NAME, "filename": "rows.jsonl"}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert {"uploadUrl", "blobPath", "expiresAt"} <= set(body)
    assert body["blobPath"].startswith(f"inbox/{MODEL_NAME}/") and body["blobPath"].endswith("/rows.jsonl")
    assert "tenant-acme" in body["uploadUrl"] and body["blobPath"] in body["uploadUrl"]
    assert [(c, p) for c, p, _ in fakes.blobs.upload_urls] == [("tenant-acme", body["blobPath"])]


@pytest.mark.parametrize(
    ("path", "kwargs", "code"),
    [
        pytest.param("/api/v1/uploads", {"content": b"{not json"}, "InvalidRequest", id="uploads-bad-json"),
        pytest.param("/api/v1/uploads", {"content": b""}, "InvalidRequest", id="uploads-no-body"),
        pytest.param("/api/v1/uploads", {"json": {"model": MODEL_NAME}}, "InvalidRequest", id="uploads-missing"),
        pytest.param(
            "/api/v1/uploads",
            {"json": {"model": MODEL_NAME, "filename": "a.csv", "tenantId": "globex"}},
            "InvalidRequest",
            id="uploads-extra-field",
        ),
        pytest.param("/api/v1/uploads", {"json": [1, 2]}, "InvalidRequest", id="uploads-array"),
        pytest.param(
            "/api/v1/uploads", {"json": {"model": 5, "filename": "a.csv"}}, "InvalidRequest", id="uploads-wrong-type"
        ),
        pytest.param(
            "/api/v1/uploads",
            {"json": {"model": MODEL_NAME, "filename": "../x.csv"}},
            "InvalidFilename",
            id="uploads-filename",
        ),
        pytest.param(
            "/api/v1/uploads",
            {"json": {"model": MODEL_NAME, "filename": "x.txt"}},
            "UnsupportedFileType",
            id="uploads-extension",
        ),
        pytest.param("/api/v1/jobs", {"content": b"[}"}, "InvalidRequest", id="jobs-bad-json"),
        pytest.param("/api/v1/jobs", {"json": {"blobPath": "a.csv"}}, "InvalidRequest", id="jobs-missing"),
        pytest.param(
            "/api/v1/jobs",
            {"json": {"model": MODEL_NAME, "blobPath": "a.csv", "x": 1}},
            "InvalidRequest",
            id="jobs-extra-field",
        ),
        pytest.param(
            "/api/v1/jobs",
            {"json": {"model": MODEL_NAME, "blobPath": "outbox/j/results.jsonl"}},
            "InvalidBlobPath",
            id="jobs-outbox",
        ),
        pytest.param(
            "/api/v1/jobs",
            {"json": {"model": MODEL_NAME, "blobPath": "inbox/../outbox/j/results.jsonl"}},
            "InvalidBlobPath",
            id="jobs-dot-dot",
        ),
        pytest.param("/api/v1/subscriptions", {"content": b"nope"}, "InvalidRequest", id="subs-bad-json"),
        pytest.param("/api/v1/subscriptions", {"json": {}}, "InvalidRequest", id="subs-missing"),
        pytest.param(
            "/api/v1/subscriptions",
            {"json": {"endpointUrl": "https://h.example.org/", "secret": 1}},
            "InvalidRequest",
            id="subs-extra-field",
        ),
        pytest.param(
            "/api/v1/subscriptions",
            {"json": {"endpointUrl": "https://h.example.org/", "schema": "Custom"}},
            "InvalidSchema",
            id="subs-schema",
        ),
        pytest.param(
            "/api/v1/subscriptions",
            {"json": {"endpointUrl": "https://h.example.org/", "eventTypes": ["Other.Thing"]}},
            "InvalidEventTypes",
            id="subs-event-types",
        ),
        pytest.param(
            "/api/v1/subscriptions",
            {"json": {"endpointUrl": "not a url"}},
            "EndpointValidationFailed",
            id="subs-not-url",
        ),
    ],
)
def test_a_bad_request_body_is_400_with_the_error_body(
    client: TestClient, keys: dict[str, str], path: str, kwargs: dict[str, Any], code: str
) -> None:
    headers = auth(keys["acme"])
    if "content" in kwargs:
        headers["Content-Type"] = "application/json"

    response = client.post(path, headers=headers, **kwargs)

    assert_error(response, 400, code)


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "limit=abc", "continuationToken=%25%25%25", "continuationToken=WzFd"],
)
def test_bad_paging_parameters_are_400(client: TestClient, keys: dict[str, str], query: str) -> None:
    assert_error(client.get(f"/api/v1/jobs?{query}", headers=auth(keys["acme"])), 400)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/uploads", {"model": "nope", "filename": "a.csv"}),
        ("/api/v1/uploads", {"model": f"{MODEL_NAME}@9", "filename": "a.csv"}),
        ("/api/v1/jobs", {"model": "nope", "blobPath": "data/rows.jsonl"}),
    ],
)
def test_an_unknown_model_in_a_request_is_a_4xx_unknown_model_error(
    platform: Platform, client: TestClient, keys: dict[str, str], path: str, body: dict[str, str]
) -> None:
    upload(platform, "acme", "data/rows.jsonl", b'{"a": 1}\n')

    response = client.post(path, headers=auth(keys["acme"]), json=body)

    assert response.status_code in (400, 404)
    assert_error(response, response.status_code, "UnknownModel")


@pytest.mark.parametrize("token", [{"r": "x"}, {"r": None}, {"r": [1]}], ids=["text", "null", "list"])
def test_a_tampered_results_token_is_400_not_500(
    platform: Platform, client: TestClient, keys: dict[str, str], token: dict[str, object]
) -> None:
    job_id = make_job(platform, "acme", "rows.jsonl", rows=3)

    response = client.get(
        f"/api/v1/jobs/{job_id}/results", headers=auth(keys["acme"]), params={"continuationToken": encode_token(token)}
    )

    assert_error(response, 400, "InvalidContinuationToken")


@pytest.mark.parametrize("token", [{"c": 5}, {"c": ["a"]}, {"c": {"x": 1}}], ids=["number", "list", "object"])
def test_a_tampered_jobs_token_is_400_not_500(
    platform: Platform, client: TestClient, keys: dict[str, str], token: dict[str, object]
) -> None:
    make_job(platform, "acme", "rows.jsonl", run=False)

    response = client.get("/api/v1/jobs", headers=auth(keys["acme"]), params={"continuationToken": encode_token(token)})

    assert_error(response, 400, "InvalidContinuationToken")


def test_the_readmes_curl_examples_send_json_that_is_accepted(client: TestClient, keys: dict[str, str]) -> None:
    """curl -d alone labels a body x-www-form-urlencoded; the README's examples must say it is JSON."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    posts = [line for line in readme.splitlines() if line.startswith("curl") and " -d " in line]
    assert posts and all('-H "Content-Type: application/json"' in line for line in posts)
    headers = {**auth(keys["acme"]), "Content-Type": "application/json"}
    response = client.post(
        "/api/v1/uploads", headers=headers, content=b'{"model": "breast-cancer-classifier", "filename": "rows.jsonl"}'
    )
    assert response.status_code == 201, response.text


def test_post_jobs_runs_a_blob_in_the_callers_container(
    platform: Platform, fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    upload(platform, "acme", "data/rows.csv", sample_bytes("breast-cancer.csv"))

    response = client.post(
        "/api/v1/jobs", headers=auth(keys["acme"]), json={"model": f"{MODEL_NAME}@1", "blobPath": "data/rows.csv"}
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["model"] == {"name": MODEL_NAME, "version": "1"}
    assert [m.job_id for m in fakes.queue.messages] == [body["jobId"]]
    got = client.get(f"/api/v1/jobs/{body['jobId']}", headers=auth(keys["acme"])).json()
    assert got["jobId"] == body["jobId"] and got["counts"] == {"records": 0, "succeeded": 0, "failed": 0}


# Paging


def test_jobs_page_newest_first_with_a_continuation_token(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    created = [make_job(platform, "acme", f"rows-{n}.jsonl", run=False) for n in range(7)]
    make_job(platform, "globex", "other.jsonl", run=False)

    seen: list[dict[str, Any]] = []
    token = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3, **({"continuationToken": token} if token else {})}
        page = client.get("/api/v1/jobs", headers=auth(keys["acme"]), params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 3
        seen += body["items"]
        token = body["continuationToken"]
        if not token:
            break

    ids = [item["jobId"] for item in seen]
    assert len(ids) == len(set(ids)) == 7
    assert set(ids) == set(created)
    stamps = [item["createdAt"] for item in seen]
    assert stamps == sorted(stamps, reverse=True)


def test_jobs_created_in_the_same_millisecond_page_without_loss(
    platform: Platform, fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    created = [make_job(platform, "acme", f"rows-{n}.jsonl", run=False) for n in range(7)]
    for doc in fakes.jobs.docs.values():
        doc["createdAt"] = "2030-01-01T00:00:00.000Z"

    for limit in (1, 2, 3, 7, 8):
        ids, token = [], None
        while True:
            params: dict[str, Any] = {"limit": limit, **({"continuationToken": token} if token else {})}
            body = client.get("/api/v1/jobs", headers=auth(keys["acme"]), params=params).json()
            ids += [item["jobId"] for item in body["items"]]
            token = body["continuationToken"]
            if not token:
                break
        assert sorted(ids) == sorted(created), limit


def test_results_page_through_every_item_exactly_once(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    platform.batch_size = 10
    job_id = make_job(platform, "acme", "rows.jsonl", rows=53)

    for limit in (1, 7, 10, 53, 1000):
        items: list[dict[str, Any]] = []
        token = None
        for _ in range(60):
            params: dict[str, Any] = {"limit": limit, **({"continuationToken": token} if token else {})}
            response = client.get(f"/api/v1/jobs/{job_id}/results", headers=auth(keys["acme"]), params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["jobId"] == job_id and body["status"] == "succeeded"
            assert len(body["items"]) <= limit
            items += body["items"]
            token = body["continuationToken"]
            if not token:
                break
        assert [item["recordIndex"] for item in items] == list(range(53)), limit
        assert all(item["id"] and item["output"]["label"] for item in items)


# Subscriptions


def test_subscriptions_create_list_get_delete(fakes: Fakes, client: TestClient, keys: dict[str, str]) -> None:
    headers = auth(keys["acme"])
    created = client.post(
        "/api/v1/subscriptions",
        headers=headers,
        json={
            "endpointUrl": "https://hooks.example.org/in?code=s3cret",
            "schema": "CloudEventSchemaV1_0",
            "eventTypes": ["AIaaS.Job.Failed"],
        },
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["endpointUrl"] == "https://hooks.example.org/in"  # the secret in the query is never shown
    assert sub["schema"] == "CloudEventSchemaV1_0" and sub["eventTypes"] == ["AIaaS.Job.Failed"]
    assert fakes.validator.validated == [("https://hooks.example.org/in?code=s3cret", "CloudEventSchemaV1_0")]

    listed = client.get("/api/v1/subscriptions", headers=headers).json()["items"]
    assert [s["subscriptionId"] for s in listed] == [sub["subscriptionId"]]
    assert client.get(f"/api/v1/subscriptions/{sub['subscriptionId']}", headers=headers).json() == sub

    deleted = client.delete(f"/api/v1/subscriptions/{sub['subscriptionId']}", headers=headers)
    assert deleted.status_code == 204
    assert client.get("/api/v1/subscriptions", headers=headers).json() == {"items": []}
    assert_error(client.get(f"/api/v1/subscriptions/{sub['subscriptionId']}", headers=headers), 404)
    assert_error(client.delete(f"/api/v1/subscriptions/{sub['subscriptionId']}", headers=headers), 404)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.org/in",
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "ftp://hooks.example.org/in",
        "https://user:pw@hooks.example.org/in",
        "/relative/hook",
    ],
)
def test_a_webhook_that_is_not_https_is_refused_by_default(
    fakes: Fakes, client: TestClient, keys: dict[str, str], url: str
) -> None:
    response = client.post("/api/v1/subscriptions", headers=auth(keys["acme"]), json={"endpointUrl": url})

    # The one answer every refused or failing endpoint gets (the egress policy: nothing about why).
    error = assert_error(response, 400, "EndpointValidationFailed")
    assert error["message"] == ENDPOINT_VALIDATION_MESSAGE
    assert fakes.subscriptions.docs == {} and fakes.validator.validated == []


def test_loopback_http_webhooks_are_accepted_only_when_allowed(
    platform: Platform, fakes: Fakes, keys: dict[str, str]
) -> None:
    local = TestClient(create_app(lambda: platform, allow_loopback_webhooks=True), raise_server_exceptions=False)
    headers = auth(keys["acme"])

    for url in ("http://127.0.0.1:9000/hook", "http://localhost:9000/hook", "http://[::1]:9000/hook"):
        created = local.post("/api/v1/subscriptions", headers=headers, json={"endpointUrl": url})
        assert created.status_code == 201, (url, created.text)
    refused = local.post("/api/v1/subscriptions", headers=headers, json={"endpointUrl": "http://example.org/h"})
    assert_error(refused, 400, "EndpointValidationFailed")
    assert len(fakes.subscriptions.docs) == 3


def test_an_endpoint_that_fails_the_handshake_is_400_and_not_stored(
    fakes: Fakes, client: TestClient, keys: dict[str, str]
) -> None:
    fakes.validator.refuse("https://hooks.example.org/broken", "the endpoint answered 500 to the handshake")

    response = client.post(
        "/api/v1/subscriptions", headers=auth(keys["acme"]), json={"endpointUrl": "https://hooks.example.org/broken"}
    )

    error = assert_error(response, 400, "EndpointValidationFailed")
    assert error["message"] == ENDPOINT_VALIDATION_MESSAGE  # not what the endpoint answered (a 500)
    assert fakes.subscriptions.docs == {}


# Models


def test_models_lists_the_catalogue_with_versions_aliases_and_input_types(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = client.get("/api/v1/models", headers=auth(keys["acme"])).json()

    [model] = [m for m in body["items"] if m["name"] == MODEL_NAME]
    assert model["versions"] == ["1"]
    assert model["aliases"] == {"production": "1"}
    assert model["inputTypes"] == [".jsonl", ".csv"]
    assert model["card"]["name"] == MODEL_NAME and model["card"]["metrics"]["accuracy"] > 0.9


def test_one_model_with_its_card_and_an_unknown_one_is_404(client: TestClient, keys: dict[str, str]) -> None:
    one = client.get(f"/api/v1/models/{MODEL_NAME}", headers=auth(keys["acme"]))
    assert one.status_code == 200
    card = one.json()["card"]
    assert card["features"][0] == "mean radius" and card["labels"] == ["malignant", "benign"]
    assert "buildEnvironment" not in card

    assert_error(client.get("/api/v1/models/nope", headers=auth(keys["acme"])), 404, "UnknownModel")


# Malformed ids, tokens and oversized parameters: a 4xx before any store sees them, never a 5xx or page 1 again


def _cosmos_refuses(value: str) -> bool:
    """Ids Cosmos DB refuses (service quotas: at most 1,023 bytes, none of / \\ ? #)."""
    return len(value.encode()) > 1023 or any(c in value for c in "/\\?#")


@pytest.fixture
def strict_stores(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stores refuse what Cosmos refuses, with the unmapped error a real store call would raise there."""
    seen: list[str] = []

    def strict(method: Any, position: int) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append(args[position])
            if _cosmos_refuses(args[position]):
                raise RuntimeError(f"the store refused the id {args[position][:20]}...")
            return method(*args, **kwargs)

        return call

    monkeypatch.setattr(platform.jobs, "get_job", strict(platform.jobs.get_job, 1))
    monkeypatch.setattr(platform.subscriptions, "get_subscription", strict(platform.subscriptions.get_subscription, 1))
    monkeypatch.setattr(platform.models, "get_model", strict(platform.models.get_model, 1))
    monkeypatch.setattr(platform.models, "get_aliases", strict(platform.models.get_aliases, 1))
    return seen


MALFORMED_IDS = {
    "16k-chars": "a" * 16_000,
    "upper-case": "A" * 32,
    "short": "0" * 31,
    "long": "0" * 33,
    "word": "doesnotexist",
    "question-mark": "0" * 31 + "?",
    "hash": "0" * 31 + "#",
    "non-ascii": "0" * 31 + "é",
}


@pytest.mark.parametrize("bad_id", list(MALFORMED_IDS.values()), ids=list(MALFORMED_IDS))
def test_a_malformed_job_or_subscription_id_is_404_as_a_missing_one_and_never_reaches_a_store(
    client: TestClient, keys: dict[str, str], strict_stores: list[str], bad_id: str
) -> None:
    """Decided: a malformed id names nothing, so it answers exactly as a well-formed id that does not exist."""
    headers = auth(keys["acme"])
    quoted = bad_id.replace("?", "%3F").replace("#", "%23")
    for path in (f"/api/v1/jobs/{quoted}", f"/api/v1/jobs/{quoted}/results", f"/api/v1/subscriptions/{quoted}"):
        error = assert_error(client.get(path, headers=headers), 404, "NotFound")
        assert len(error["message"]) < 200
    assert_error(client.delete(f"/api/v1/subscriptions/{quoted}", headers=headers), 404, "NotFound")
    assert bad_id not in strict_stores

    missing = "0" * 32
    expected = assert_error(client.get(f"/api/v1/jobs/{missing}", headers=headers), 404)["message"]
    if len(bad_id) < 64:
        got = assert_error(client.get(f"/api/v1/jobs/{quoted}", headers=headers), 404)["message"]
        assert got.replace(bad_id, "<id>") == expected.replace(missing, "<id>")


@pytest.mark.parametrize(
    "bad_name", ["m" * 16_000, "Upper", "-dash-first", "a b"], ids=["16k", "upper", "dash", "space"]
)
def test_a_malformed_model_name_is_404_on_reads_and_400_on_an_alias_move(
    client: TestClient, keys: dict[str, str], strict_stores: list[str], bad_name: str
) -> None:
    headers = auth(keys["acme"])
    quoted = bad_name.replace(" ", "%20")

    assert_error(client.get(f"/api/v1/models/{quoted}", headers=headers), 404, "UnknownModel")
    assert_error(client.get(f"/api/v1/models/{quoted}/aliases", headers=headers), 404, "UnknownModel")
    move = client.put(f"/api/v1/models/{quoted}/aliases/production", json={"version": "1"}, headers=headers)
    assert_error(move, 400, "InvalidModelName")
    assert bad_name not in strict_stores


def test_an_alias_move_to_a_malformed_version_is_400(client: TestClient, keys: dict[str, str]) -> None:
    move = client.put(
        f"/api/v1/models/{MODEL_NAME}/aliases/production", json={"version": "../1"}, headers=auth(keys["acme"])
    )

    assert_error(move, 400, "InvalidRequest")


TOKENS = {
    "garbage": "garbage",
    "not-base64url": "e30!!!",  # b64decode alone would skip the !s and read {}
    "empty-object": encode_token({}),
    "null-cursor": encode_token({"c": None}),
    "forged-cursor": encode_token({"c": "garbage"}),
    "forged-ids": encode_token({"c": "2026-01-01T00:00:00.000Z|NOT-AN-ID"}),
    "a-results-token": encode_token({"r": 3, "j": "0" * 32}),
    "too-long": "A" * 20_000,
}


@pytest.mark.parametrize("token", list(TOKENS.values()), ids=list(TOKENS))
def test_a_continuation_token_the_api_did_not_make_is_400_never_the_first_page_again(
    platform: Platform, client: TestClient, keys: dict[str, str], token: str
) -> None:
    make_job(platform, "acme", "rows.jsonl", run=False)

    response = client.get("/api/v1/jobs", headers=auth(keys["acme"]), params={"continuationToken": token})

    assert_error(response, 400, "InvalidContinuationToken")


def test_a_results_token_of_another_list_or_job_is_400(
    platform: Platform, client: TestClient, keys: dict[str, str]
) -> None:
    job_id = make_job(platform, "acme", "a.jsonl", rows=4)
    other = make_job(platform, "acme", "b.jsonl", rows=4)
    page = client.get(f"/api/v1/jobs/{job_id}/results", headers=auth(keys["acme"]), params={"limit": 2}).json()
    jobs_page = {"continuationToken": encode_token({"c": "2026-01-01T00:00:00.000Z|"})}

    for params in (
        {"continuationToken": page["continuationToken"]},  # this job's token: the next page
        jobs_page,
        {"continuationToken": encode_token({})},
        {"continuationToken": "garbage"},
    ):
        response = client.get(f"/api/v1/jobs/{other}/results", headers=auth(keys["acme"]), params=params)
        assert_error(response, 400, "InvalidContinuationToken")
    again = client.get(
        f"/api/v1/jobs/{job_id}/results",
        headers=auth(keys["acme"]),
        params={"continuationToken": page["continuationToken"]},
    )
    assert [item["recordIndex"] for item in again.json()["items"]] == [2, 3]


@pytest.mark.parametrize(
    "query",
    [
        "task=" + "t" * 20_000,
        "tag=" + "k:" + "v" * 20_000,
        "&".join(["tag=k:v"] * 50),
        "limit=" + "9" * 5_000,
    ],
    ids=["long-task", "long-tag", "many-tags", "long-limit"],
)
def test_oversized_query_parameters_are_400(client: TestClient, keys: dict[str, str], query: str) -> None:
    path = "/api/v1/jobs" if query.startswith("limit") else "/api/v1/models"

    assert_error(client.get(f"{path}?{query}", headers=auth(keys["acme"])), 400)


def test_an_oversized_authorization_header_is_401(client: TestClient) -> None:
    for token in ("k" * 100_000, "aiaas_" + "t" * 50_000 + ".secret"):
        assert_error(client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}), 401, "Unauthorized")
