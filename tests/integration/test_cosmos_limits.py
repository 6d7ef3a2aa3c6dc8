"""Cosmos DB's limits and throttling on the stand-in, through the azure-cosmos SDK and the stores over it."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from shared.adapters.cosmos import PAGE_BUDGET, CosmosJobStore, CosmosResultStore, ensure_schema
from shared.adapters.cosmos_client import make_cosmos_client
from shared.domain.errors import NotFound, ServiceUnavailable
from shared.domain.jobs import ResultPage
from shared.localhost.emulators import CosmosServer

pytestmark = pytest.mark.integration
MB2 = 2 * 1024 * 1024  # Cosmos DB service quotas: item and request body, 2 MB each


@pytest.fixture(scope="module")
def client(cosmos: CosmosServer) -> CosmosClient:
    return make_cosmos_client(cosmos.endpoint, cosmos.key)


@pytest.fixture(scope="module")
def db(client: CosmosClient) -> DatabaseProxy:
    return ensure_schema(client, f"db{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def things(db: DatabaseProxy) -> ContainerProxy:
    return db.create_container_if_not_exists("things", partition_key=PartitionKey(path="/tenantId"))


@pytest.fixture
def faults(cosmos: CosmosServer) -> Iterator[httpx.Client]:
    """The stand-in's fault switch (POST/GET/DELETE /_aiaas/faults); disarmed after each test."""
    with httpx.Client(base_url=cosmos.endpoint, verify=False, timeout=10) as admin:
        yield admin
        admin.delete("/_aiaas/faults").raise_for_status()


def _arm(admin: httpx.Client, **fault: Any) -> None:
    admin.post("/_aiaas/faults", json=fault).raise_for_status()


def _hits(admin: httpx.Client) -> int:
    return int(admin.get("/_aiaas/faults").json()["hits"])


def _item_of(size: int, **fields: Any) -> dict[str, Any]:
    """An item whose compact JSON is exactly `size` bytes (ASCII, so bytes and characters agree)."""
    item = {"id": uuid.uuid4().hex, "tenantId": "acme", **fields, "pad": ""}
    item["pad"] = "p" * (size - len(json.dumps(item, separators=(",", ":"))))
    assert len(json.dumps(item, separators=(",", ":"))) == size
    return item


def _refusal(err: CosmosHttpResponseError) -> tuple[int, str]:
    return err.status_code or 0, str(err.message)


# The stand-in refuses what Cosmos DB refuses, as Cosmos DB words it


def test_an_item_over_2_mb_is_refused_with_413(things: ContainerProxy) -> None:
    things.upsert_item(_item_of(MB2))
    with pytest.raises(CosmosHttpResponseError) as refused:
        things.upsert_item(_item_of(MB2 + 1))
    status, message = _refusal(refused.value)
    assert status == 413 and "RequestEntityTooLarge" in message and "Request size is too large" in message


def test_a_request_body_over_2_mb_is_refused_though_its_item_would_fit(cosmos: CosmosServer) -> None:
    """1.4 MB of 'é' in UTF-8 is 4.2 MB escaped as \\u00e9, as the SDK sends it by default."""
    text = "é" * 700_000
    plain = CosmosClient(cosmos.endpoint, credential=cosmos.key, connection_verify=False)
    db = f"db{uuid.uuid4().hex[:8]}"
    container = plain.create_database_if_not_exists(db).create_container_if_not_exists(
        "things", partition_key=PartitionKey(path="/tenantId")
    )
    with pytest.raises(CosmosHttpResponseError) as refused:
        container.upsert_item({"id": "escaped", "tenantId": "acme", "text": text})
    assert _refusal(refused.value)[0] == 413
    # The platform's client sends item writes as compact UTF-8: the same item goes through.
    ours = make_cosmos_client(cosmos.endpoint, cosmos.key).get_database_client(db).get_container_client("things")
    ours.upsert_item({"id": "utf8", "tenantId": "acme", "text": text})
    assert ours.read_item("utf8", partition_key="acme")["text"] == text


def test_an_id_over_1023_bytes_is_refused_with_400(things: ContainerProxy) -> None:
    things.upsert_item({"id": "é" * 511 + "x", "tenantId": "acme"})  # 1,023 bytes
    with pytest.raises(CosmosHttpResponseError) as refused:
        things.upsert_item({"id": "é" * 512, "tenantId": "acme"})  # 512 characters, 1,024 bytes
    status, message = _refusal(refused.value)
    assert status == 400 and "BadRequest" in message
    assert "Ensure to provide a unique non-empty string less than '1024' characters" in message


@pytest.mark.parametrize("bad", ["a/b", "a\\b", "a?b", "a#b"])
def test_an_id_with_a_forbidden_character_is_refused(
    cosmos: CosmosServer, db: DatabaseProxy, things: ContainerProxy, bad: str
) -> None:
    with pytest.raises(ValueError, match="illegal chars"):  # the Python SDK checks before sending
        things.upsert_item({"id": bad, "tenantId": "acme"})
    # A client that does not check (REST, other SDKs) meets the service's refusal.
    answer = httpx.post(
        f"{cosmos.endpoint}dbs/{db.id}/colls/things/docs",
        json={"id": bad, "tenantId": "acme"},
        headers={"x-ms-documentdb-partitionkey": '["acme"]', "x-ms-documentdb-is-upsert": "True"},
        verify=False,
    )
    assert answer.status_code == 400 and answer.json()["code"] == "BadRequest", answer.text


def test_a_partition_key_value_over_2048_bytes_is_refused_with_400(things: ContainerProxy) -> None:
    things.upsert_item({"id": "long-key", "tenantId": "t" * 2048})
    with pytest.raises(CosmosHttpResponseError) as refused:
        things.upsert_item({"id": "longer-key", "tenantId": "t" * 2049})
    assert _refusal(refused.value)[0] == 400


# Throttling: the SDK retries as the service asks; what it gives up on is ServiceUnavailable


def test_throttled_requests_are_retried_and_succeed(things: ContainerProxy, faults: httpx.Client) -> None:
    _arm(faults, status=429, count=3, retryAfterMs=20)
    things.upsert_item({"id": "throttled", "tenantId": "acme", "n": 1})
    assert _hits(faults) == 3  # three 429s, each retried after the 20 ms asked for
    _arm(faults, status=429, count=2, retryAfterMs=20)
    assert [
        doc["n"]
        for doc in things.query_items(
            "SELECT * FROM c WHERE c.tenantId = 'acme' AND c.id = 'throttled'", partition_key="acme"
        )
    ] == [1]
    assert _hits(faults) == 2


def test_throttling_past_the_sdk_retries_is_service_unavailable_with_the_services_retry_after(
    cosmos: CosmosServer, db: DatabaseProxy, faults: httpx.Client
) -> None:
    jobs = CosmosJobStore(
        make_cosmos_client(cosmos.endpoint, cosmos.key, throttle_retries=2).get_database_client(db.id)
    )
    _arm(faults, status=429, count=100, retryAfterMs=1500, path="/colls/jobs/docs")
    with pytest.raises(ServiceUnavailable) as busy:
        jobs.get_job("acme", "some-job")
    assert busy.value.code == "ServiceBusy" and busy.value.retry_after_seconds == 2  # 1.5 s, rounded up
    assert _hits(faults) == 3  # the first try and the two retries it was allowed
    _arm(faults, status=429, count=100, retryAfterMs=10, path="/colls/jobs/docs")
    with pytest.raises(ServiceUnavailable):  # a query throttled while its pages are read
        jobs.list_jobs("acme", limit=10)


def test_unavailable_database_is_service_unavailable_and_other_errors_stay_what_they_are(
    db: DatabaseProxy, faults: httpx.Client
) -> None:
    jobs = CosmosJobStore(db)
    _arm(faults, status=503, count=20, retryAfterMs=3000, path="/colls/jobs/docs")
    with pytest.raises(ServiceUnavailable) as down:
        jobs.get_job("acme", "some-job")
    assert down.value.retry_after_seconds == 3
    faults.delete("/_aiaas/faults")
    with pytest.raises(NotFound):
        jobs.get_job("acme", "some-job")


# Result pages sized by bytes: whatever the model returns is stored and read back whole


def _embeddings(count: int, first: int = 0, dims: int = 384, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"recordIndex": i, "id": f"r{i}", "output": {"embedding": [rng.uniform(-0.2, 0.2) for _ in range(dims)]}}
        for i in range(first, first + count)
    ]


def _stored_docs(db: DatabaseProxy, tenant: str, job: str) -> list[dict[str, Any]]:
    container = db.get_container_client("results")
    query = "SELECT * FROM c WHERE c.tenantId = @t AND c.jobId = @j"
    params: list[dict[str, Any]] = [{"name": "@t", "value": tenant}, {"name": "@j", "value": job}]
    return list(container.query_items(query, parameters=params, partition_key=[tenant, job]))


def test_a_page_of_1000_embeddings_is_stored_in_documents_under_2_mb_and_read_back_whole(db: DatabaseProxy) -> None:
    store, job = CosmosResultStore(db), uuid.uuid4().hex
    items = _embeddings(1000)  # about 7.5 MB of JSON
    store.put_page(ResultPage("acme", job, 0, 0, 999, items, []))
    pages = list(store.iter_pages("acme", job))
    assert [item for page in pages for item in page.items] == items
    docs = _stored_docs(db, "acme", job)
    assert len(docs) >= 5 and all(len(json.dumps(doc, separators=(",", ":"))) < MB2 for doc in docs)
    later = list(store.iter_pages("acme", job, from_record=640))
    assert [item["recordIndex"] for page in later for item in page.items] == list(range(640, 1000))


def test_a_record_bigger_than_a_cosmos_item_is_stored_in_parts_and_read_back_whole(db: DatabaseProxy) -> None:
    store, job = CosmosResultStore(db), uuid.uuid4().hex
    huge = {"recordIndex": 1, "id": "big", "output": {"embedding": [0.123456789] * 600_000}}  # 7.2 MB alone
    items = [{"recordIndex": 0, "id": "a", "output": {}}, huge, {"recordIndex": 3, "id": "b", "output": {"x": "é"}}]
    errors = [{"recordIndex": 2, "id": "x" * 3_000_000, "message": "bad record"}]
    store.put_page(ResultPage("acme", job, 0, 0, 4, items, errors))
    pages = list(store.iter_pages("acme", job))
    assert [item for page in pages for item in page.items] == items
    assert [error for page in pages for error in page.errors] == errors
    assert all(len(json.dumps(doc, separators=(",", ":"))) < MB2 for doc in _stored_docs(db, "acme", job))
    from_huge = list(store.iter_pages("acme", job, from_record=1))
    assert [item["recordIndex"] for page in from_huge for item in page.items] == [1, 3]
    stored = _stored_docs(db, "acme", job)
    store.put_page(ResultPage("acme", job, 0, 0, 4, items, errors))  # a redelivery overwrites the same documents
    assert sorted(doc["id"] for doc in _stored_docs(db, "acme", job)) == sorted(doc["id"] for doc in stored)
    assert [item for page in store.iter_pages("acme", job) for item in page.items] == items


def test_a_redelivered_page_cut_at_other_records_still_gives_each_record_once(db: DatabaseProxy) -> None:
    store, job = CosmosResultStore(db), uuid.uuid4().hex
    first = [{"recordIndex": i, "id": None, "output": "a" * (PAGE_BUDGET // 3 - 60)} for i in range(10)]
    store.put_page(ResultPage("acme", job, 0, 0, 9, first, []))  # three records a document
    again = [{"recordIndex": i, "id": None, "output": "b" * (PAGE_BUDGET // 5 - 60)} for i in range(10)]
    store.put_page(ResultPage("acme", job, 0, 0, 9, again, []))  # five a document: the old ones overlap
    read = [item for page in store.iter_pages("acme", job) for item in page.items]
    assert [item["recordIndex"] for item in read] == list(range(10))
    assert all(item["output"][0] in "ab" for item in read)
    for start in (2, 4, 5, 7):
        again_read = [
            item["recordIndex"] for page in store.iter_pages("acme", job, from_record=start) for item in page.items
        ]
        assert again_read == list(range(start, 10))


def test_a_page_under_the_budget_as_json_but_over_2_mb_as_a_stored_string_is_cut(db: DatabaseProxy) -> None:
    """Entries are stored as one string of JSON lines, where every quote costs two bytes more than in the file."""
    store, job = CosmosResultStore(db), uuid.uuid4().hex
    items = [{"recordIndex": i, "id": f'"q{i}"', "output": {"text": '"' * 700}} for i in range(1000)]
    assert sum(len(json.dumps(item, separators=(",", ":"))) for item in items) < PAGE_BUDGET  # fits as JSON
    store.put_page(ResultPage("acme", job, 0, 0, 999, items, []))
    docs = _stored_docs(db, "acme", job)
    assert len(docs) >= 2 and all(len(json.dumps(doc, separators=(",", ":"))) < MB2 for doc in docs)
    assert [item for page in store.iter_pages("acme", job) for item in page.items] == items


def test_entries_with_unicode_line_separators_come_back_unchanged(db: DatabaseProxy) -> None:
    store, job = CosmosResultStore(db), uuid.uuid4().hex
    items = [{"recordIndex": 0, "id": "a\u2028b", "output": {"text": "x\u2029y\x1cz\u0085w\r\nv"}}]
    store.put_page(ResultPage("acme", job, 0, 0, 0, items, []))
    assert [item for page in store.iter_pages("acme", job) for item in page.items] == items
