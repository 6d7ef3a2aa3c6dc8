"""The SDK's retries, errors and block upload against scripted answers (httpx.MockTransport): what the stack cannot
be made to answer on cue (a 503 with Retry-After, a storage account's requests)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import aiaas_client
import httpx
import pytest
from aiaas_client import _async_client, _client

from shared.localhost.emulators import free_port

API = "http://api.test/api"
JOB = {
    "jobId": "a" * 32,
    "status": "succeeded",
    "model": {"name": "m", "version": "1"},
    "input": {"blobPath": "inbox/m/x/f.jsonl", "etag": "e"},
    "counts": {"records": 1, "succeeded": 1, "failed": 0},
}


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": "scripted"}}, headers=headers)


class Script:
    """Answers requests in order, recording each."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(_client, "_sleep", waits.append)

    async def asleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(_async_client, "_sleep", asleep)
    return waits


def client(script: Callable[[httpx.Request], httpx.Response], **options: float) -> aiaas_client.Client:
    return aiaas_client.Client(API, "the-key", transport=httpx.MockTransport(script), **options)  # type: ignore[arg-type]


def test_a_429_is_retried_after_the_retry_after_it_sent(slept: list[float]) -> None:
    script = Script(error(429, "TooManyRequests", {"Retry-After": "7"}), httpx.Response(200, json=JOB))

    job = client(script).jobs.get("a" * 32)

    assert job.job_id == "a" * 32 and job.counts.succeeded == 1
    assert slept == [7.0] and len(script.requests) == 2


def test_a_503_is_retried_at_most_max_retries_times_then_raised(slept: list[float]) -> None:
    script = Script(*[error(503, "ServiceUnavailable", {"Retry-After": "1"}) for _ in range(3)])

    with pytest.raises(aiaas_client.ServerError) as raised:
        client(script, max_retries=2).jobs.get("a" * 32)

    assert raised.value.status == 503 and raised.value.code == "ServiceUnavailable"
    assert slept == [1.0, 1.0] and len(script.requests) == 3


def test_a_retry_after_longer_than_the_bound_is_raised_at_once(slept: list[float]) -> None:
    script = Script(error(429, "QuotaExceeded", {"Retry-After": "3600"}))

    with pytest.raises(aiaas_client.RateLimitedError) as raised:
        client(script, max_retry_wait=60).uploads.create("m", "f.jsonl")

    assert raised.value.code == "QuotaExceeded" and raised.value.retry_after == 3600
    assert slept == [] and len(script.requests) == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, aiaas_client.InvalidRequestError),
        (401, aiaas_client.AuthenticationError),
        (403, aiaas_client.PermissionDeniedError),
        (404, aiaas_client.NotFoundError),
        (409, aiaas_client.ConflictError),
    ],
)
def test_other_4xx_are_raised_with_their_code_and_never_retried(
    slept: list[float], status: int, kind: type[aiaas_client.AiaasError]
) -> None:
    script = Script(error(status, f"Code{status}", {"x-request-id": "req-1", "Retry-After": "1"}))

    with pytest.raises(kind) as raised:
        client(script).jobs.get("a" * 32)

    assert raised.value.status == status and raised.value.code == f"Code{status}"
    assert raised.value.request_id == "req-1" and isinstance(raised.value, aiaas_client.AiaasError)
    assert slept == [] and len(script.requests) == 1


def test_a_500_is_retried_for_a_read_but_not_for_a_post(slept: list[float]) -> None:
    reads = Script(error(500, "InternalError"), httpx.Response(200, json=JOB))
    posts = Script(error(500, "InternalError"))

    assert client(reads).jobs.get("a" * 32).status == "succeeded"
    with pytest.raises(aiaas_client.ServerError):
        client(posts).uploads.create("m", "f.jsonl")

    assert len(reads.requests) == 2 and len(posts.requests) == 1


def test_the_async_client_honours_retry_after_too(slept: list[float]) -> None:
    script = Script(error(503, "ServiceUnavailable", {"Retry-After": "2"}), httpx.Response(200, json=JOB))

    async def read() -> aiaas_client.Job:
        async with aiaas_client.AsyncClient(API, "k", transport=httpx.MockTransport(script)) as api:
            return await api.jobs.get("a" * 32)

    assert asyncio.run(read()).status == "succeeded"
    assert slept == [2.0] and len(script.requests) == 2


def test_a_large_file_goes_in_ordered_blocks_and_never_carries_the_api_key(tmp_path: Path) -> None:
    data = bytes(range(256)) * 41  # 10,496 bytes: 3 blocks of 4,096
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    blob: list[httpx.Request] = []

    def storage(request: httpx.Request) -> httpx.Response:
        blob.append(request)
        return httpx.Response(201)

    sas = "http://blob.test/c/inbox/m/x/f.jsonl?sv=2023-11-03&sig=a%2Bb%3D"
    upload = aiaas_client.Upload.model_validate({"uploadUrl": sas, "blobPath": "inbox/m/x/f.jsonl"})
    progress: list[tuple[int, int]] = []
    with aiaas_client.Client(API, "the-key", blob_transport=httpx.MockTransport(storage)) as api:
        api.uploads.send(upload, path, block_size=4096, on_progress=lambda s, t: progress.append((s, t)))

    *blocks, commit = blob
    assert [r.url.params["comp"] for r in blocks] == ["block"] * 3 and commit.url.params["comp"] == "blocklist"
    assert all(r.url.params["sig"] == "a+b=" for r in blob)  # the SAS signature sent as it was given
    assert b"".join(r.content for r in blocks) == data
    ids = [r.url.params["blockid"] for r in blocks]
    assert len(set(ids)) == 3 and len({len(base64.b64decode(i)) for i in ids}) == 1  # Azure: ids of one length
    assert re.findall(r"<Latest>(.*?)</Latest>", commit.content.decode()) == ids
    assert progress == [(4096, len(data)), (8192, len(data)), (len(data), len(data))]
    assert not any("authorization" in r.headers for r in blob)


def test_a_small_file_goes_in_one_put_blob(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"id": 1}\n')
    blob: list[httpx.Request] = []
    upload = aiaas_client.Upload.model_validate(
        {"uploadUrl": "http://blob.test/c/f?sig=s", "blobPath": "f", "headers": {"x-ms-blob-type": "BlockBlob"}}
    )
    with aiaas_client.Client(
        API, "k", blob_transport=httpx.MockTransport(lambda r: blob.append(r) or httpx.Response(201))
    ) as api:
        api.uploads.send(upload, path)

    [put] = blob
    assert put.method == "PUT" and put.headers["x-ms-blob-type"] == "BlockBlob" and put.content == path.read_bytes()


def test_submit_file_finds_the_job_of_its_blob_and_waits_for_it_to_end(slept: list[float], tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"id": 1}\n')
    mine = "inbox/m/u1/f.jsonl"
    other = {**JOB, "jobId": "b" * 32, "input": {"blobPath": "inbox/m/u0/f.jsonl"}}
    running = {**JOB, "status": "running", "input": {"blobPath": mine}}
    api = Script(
        httpx.Response(201, json={"uploadUrl": "http://blob.test/c/x?sig=s", "blobPath": mine}),
        httpx.Response(200, json={"items": [other], "continuationToken": None}),  # not admitted yet
        httpx.Response(200, json={"items": [running, other], "continuationToken": None}),
        httpx.Response(200, json=running),
        httpx.Response(200, json={**JOB, "input": {"blobPath": mine}}),
    )
    storage = Script(httpx.Response(201))
    seen: list[str] = []
    with aiaas_client.Client(
        API, "k", transport=httpx.MockTransport(api), blob_transport=httpx.MockTransport(storage)
    ) as sdk:
        job = sdk.submit_file(path, "m", metadata={"k": "v"}, on_update=lambda j: seen.append(j.status))

    assert job.job_id == "a" * 32 and job.status == "succeeded" and job.input.blob_path == mine
    assert seen == ["running", "succeeded"] and slept == [1.0, 1.0]
    assert api.requests[0].read() == b'{"model":"m","filename":"f.jsonl","metadata":{"k":"v"}}'


def test_iterators_follow_the_token_and_fetch_a_page_only_when_the_loop_gets_there() -> None:
    pages = Script(
        httpx.Response(200, json={"items": [JOB], "continuationToken": "t1"}),
        httpx.Response(200, json={"items": [{**JOB, "jobId": "b" * 32}], "continuationToken": None}),
    )
    jobs = client(pages).jobs.list(limit=1)

    first = next(jobs)
    assert first.job_id == "a" * 32 and len(pages.requests) == 1
    assert [j.job_id for j in jobs] == ["b" * 32]
    assert [dict(r.url.params) for r in pages.requests] == [{"limit": "1"}, {"limit": "1", "continuationToken": "t1"}]


def test_islice_of_an_iterator_with_that_page_size_reads_one_page() -> None:
    """What the docs say: `limit` is the page size, and islice(iterator, N) with limit=N fetches one page."""
    pages = Script(httpx.Response(200, json={"items": [JOB, {**JOB, "jobId": "b" * 32}], "continuationToken": "t1"}))

    newest = [j.job_id for j in islice(client(pages).jobs.list(limit=2), 2)]

    assert newest == ["a" * 32, "b" * 32] and len(pages.requests) == 1


def _error_page(indexes: list[int], token: str | None) -> httpx.Response:
    items = [
        {"recordIndex": i, "line": i + 1, "id": None, "field": "mean radius", "code": "InvalidRecord", "message": "m"}
        for i in indexes
    ]
    return httpx.Response(200, json={"jobId": "a" * 32, "status": "failed", "items": items, "continuationToken": token})


def test_a_jobs_failed_records_are_read_across_pages_sync_and_async() -> None:
    sync_pages = Script(httpx.Response(200, json=JOB), _error_page([1, 4], "e1"), _error_page([9], None))
    async_pages = Script(_error_page([1, 4], "e1"), _error_page([9], None))

    with client(sync_pages) as api:
        read = api.jobs.get("a" * 32).errors(limit=2)  # through the Job, as job.results()
        failed = [(e.record_index, e.line, e.field, e.code) for e in read]

    async def aread() -> list[int]:
        async with aiaas_client.AsyncClient(API, "k", transport=httpx.MockTransport(async_pages)) as api:
            return [e.record_index async for e in api.jobs.errors("a" * 32, limit=2)]

    assert failed == [(i, i + 1, "mean radius", "InvalidRecord") for i in (1, 4, 9)]
    assert asyncio.run(aread()) == [1, 4, 9]
    for pages in (sync_pages.requests[1:], async_pages.requests):
        assert [r.url.path for r in pages] == [f"/api/v1/jobs/{'a' * 32}/errors"] * 2
        assert [dict(r.url.params) for r in pages] == [{"limit": "2"}, {"limit": "2", "continuationToken": "e1"}]


def test_a_connection_error_names_the_apis_url_but_not_its_query_or_key() -> None:
    # Nothing listens on a free loopback port: a real "connection refused", sync and async.
    api_url = f"http://127.0.0.1:{free_port()}/api"
    sync = aiaas_client.Client(api_url, "the-key", max_retries=0)

    async def alist() -> None:
        async with aiaas_client.AsyncClient(api_url, "the-key", max_retries=0) as api:
            [job async for job in api.jobs.list(limit=2)]

    with sync, pytest.raises(aiaas_client.APIConnectionError) as raised:
        list(sync.jobs.list(limit=2))
    with pytest.raises(aiaas_client.APIConnectionError) as araised:
        asyncio.run(alist())

    for message in (str(raised.value), str(araised.value)):
        assert message.startswith(f"GET {api_url}/v1/jobs: "), message
        assert "limit" not in message and "the-key" not in message


def test_nested_parts_read_as_models_and_as_the_keys_they_had() -> None:
    drift = {
        "status": "drifted",
        "features": [{"name": "mean radius", "metric": "ks", "value": 0.001, "threshold": 0.05, "drifted": True}],
        "prediction": None,
        "rows": 40,
        "share": 0.5,
    }
    rollout = {"alias": "production", "arm": "canary", "stableVersion": "1", "canaryVersion": "2"}
    card = {"name": "m", "version": "2", "features": ["mean radius"], "trainedOn": "wdbc"}  # trainedOn: the package's
    event = {"id": "ev-1", "eventType": "AIaaS.Model.DriftDetected", "data": {"jobId": "a" * 32, "drift": drift}}
    api = client(
        Script(
            httpx.Response(200, json={**JOB, "rollout": rollout, "drift": drift}),
            httpx.Response(200, json={"name": "m", "versions": ["1", "2"], "card": card}),
            httpx.Response(200, json={"items": [event], "continuationToken": None}),
        )
    )

    job, model, (read,) = api.jobs.get("a" * 32), api.models.get("m"), list(api.events.list())

    assert job.rollout is not None and (job.rollout.arm, job.rollout.canary_version) == ("canary", "2")
    assert job.drift is not None and [f.name for f in job.drift.features if f.drifted] == ["mean radius"]
    assert model.card.features == ["mean radius"] and model.card.model_extra == {"trainedOn": "wdbc"}
    assert read.data.drift is not None and read.data.drift.share == 0.5 and read.data.job_id == "a" * 32
    # Code written when these were dicts still reads them by their API names.
    assert job.drift["status"] == "drifted" and job.drift["features"][0]["drifted"] is True
    assert job.rollout["stableVersion"] == "1" and model.card["trainedOn"] == "wdbc"
    assert read.data.get("jobId") == "a" * 32 and read.data.get("status") is None and "drift" in read.data
    assert job.to_api()["drift"] == drift and read.to_api() == event
