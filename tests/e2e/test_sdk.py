"""The Python SDK (clients/python) against the whole local stack, as a tenant's program uses it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import aiaas_client
import httpx
import pytest
from aiaas_client import AsyncClient, Client, JobStatus, NotFoundError

from shared.bootstrap import get_platform
from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "build/samples/breast-cancer.jsonl"
MODEL = "breast-cancer-classifier"
ROWS = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
# The records a file of 25 sample rows breaks on purpose: record index -> (the field at fault, a phrase of the reason).
BROKEN: dict[int, tuple[str | None, str]] = {
    2: ("mean radius", "'mean radius' is missing"),
    7: ("mean texture", "'mean texture' must be a number"),
    8: (None, "not valid JSON"),
    16: (None, "must be a JSON object"),
    23: ("worst area", "'worst area' must be a number"),
}


def _key(api: httpx.Client) -> str:
    return api.headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="module")
def sdk_key(create_tenant: Callable[[str], httpx.Client]) -> str:
    return _key(create_tenant("sdk-acme"))


@pytest.fixture(scope="module")
def sdk(stack: LocalHost, sdk_key: str) -> Client:
    with Client(stack.api_url, sdk_key, timeout=30) as client:
        yield client  # type: ignore[misc]


@pytest.fixture(scope="module")
def finished(sdk: Client) -> aiaas_client.Job:
    """One sample file submitted through the SDK and waited for: the job the other tests read."""
    return sdk.submit_file(SAMPLE, MODEL, wait=True, timeout=180)


def test_submit_file_returns_the_finished_job_with_every_result(finished: aiaas_client.Job) -> None:
    assert finished.status == JobStatus.SUCCEEDED and finished.done
    assert finished.model.name == MODEL
    assert finished.counts.records == finished.counts.succeeded == len(ROWS)
    assert finished.input.blob_path.startswith(f"inbox/{MODEL}/") and finished.input.blob_path.endswith(SAMPLE.name)

    results = list(finished.results(limit=7))  # many pages of 7: each continuation token followed once

    assert [r.record_index for r in results] == list(range(len(ROWS)))
    assert [r.id for r in results] == [row["id"] for row in ROWS]
    right = sum(r.output["label"] == row["expected"] for r, row in zip(results, ROWS, strict=True))
    assert right / len(ROWS) > 0.9  # the model's own answers, not placeholders


def test_jobs_list_follows_continuation_tokens(sdk: Client, finished: aiaas_client.Job) -> None:
    second = sdk.submit_file(SAMPLE, MODEL, wait=False)  # returns once the job exists

    listed = list(sdk.jobs.list(limit=1))  # one a page: three jobs need three pages

    ids = [job.job_id for job in listed]
    assert {finished.job_id, second.job_id} <= set(ids) and len(ids) == len(set(ids))
    assert ids.index(second.job_id) < ids.index(finished.job_id)  # newest first
    assert sdk.jobs.get(finished.job_id).counts == finished.counts


def test_another_tenants_job_is_not_found_with_its_code(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client], finished: aiaas_client.Job
) -> None:
    with Client(stack.api_url, _key(create_tenant("sdk-globex"))) as other:
        with pytest.raises(NotFoundError) as raised:
            other.jobs.get(finished.job_id)
        with pytest.raises(NotFoundError):
            list(other.jobs.results(finished.job_id))
        with pytest.raises(NotFoundError):
            list(other.jobs.errors(finished.job_id))

    assert raised.value.status == 404 and raised.value.code == "NotFound"
    assert raised.value.request_id


def test_a_file_over_the_block_size_goes_in_blocks_with_progress(sdk: Client, tmp_path: Path) -> None:
    rows = [{**row, "id": f"{row['id']}-{copy}"} for copy in range(3) for row in ROWS]
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(row) + "\n" for row in rows))
    size = big.stat().st_size
    block = 64 * 1024
    progress: list[tuple[int, int]] = []

    job = sdk.submit_file(
        big, MODEL, block_size=block, on_progress=lambda sent, total: progress.append((sent, total)), timeout=180
    )

    assert len(progress) == -(-size // block) > 1  # one call a block
    assert progress[-1] == (size, size) and [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert job.status == JobStatus.SUCCEEDED and job.counts.succeeded == len(rows)
    assert [r.id for r in job.results()] == [row["id"] for row in rows]  # the blocks in their order


def test_async_client_submits_waits_and_pages(stack: LocalHost, create_tenant: Callable[[str], httpx.Client]) -> None:
    key = _key(create_tenant("sdk-async"))

    async def scenario() -> tuple[aiaas_client.Job, list[aiaas_client.Result], list[str], str | None]:
        async with AsyncClient(stack.api_url, key) as client:
            updates: list[str] = []
            job = await client.submit_file(SAMPLE, MODEL, on_update=lambda j: updates.append(j.status), timeout=180)
            results = [r async for r in job.aresults(limit=9)]
            ids = [j.job_id async for j in client.jobs.list(limit=1)]
            try:
                await client.jobs.get("0" * 32)
            except NotFoundError as err:
                return job, results, ids + updates, err.code
            return job, results, ids + updates, None

    job, results, seen, code = asyncio.run(scenario())

    assert job.status == JobStatus.SUCCEEDED
    assert [r.id for r in results] == [row["id"] for row in ROWS]
    assert job.job_id in seen and seen[-1] == JobStatus.SUCCEEDED
    assert code == "NotFound"


def test_the_readme_example_runs(stack: LocalHost, create_tenant: Callable[[str], httpx.Client]) -> None:
    readme = (REPO / "clients/python/README.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[:1]
    assert len(example.strip().splitlines()) <= 12
    env = {"AIAAS_API_URL": stack.api_url, "AIAAS_API_KEY": _key(create_tenant("sdk-readme"))}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(REPO)
        namespace: dict[str, object] = {}
        exec(compile(example, "README.md", "exec"), namespace)

    job = namespace["job"]
    assert isinstance(job, aiaas_client.Job) and job.status == JobStatus.SUCCEEDED


def test_metadata_is_echoed_in_the_job_and_its_event(sdk: Client) -> None:
    metadata = {"team": "risk", "batch": "2026-12-01"}

    job = sdk.submit_file(SAMPLE, MODEL, metadata=metadata, timeout=180)

    assert job.metadata == metadata
    events = [e for e in sdk.events.list(type="AIaaS.Job.Succeeded", limit=2) if e.data.job_id == job.job_id]
    assert [e.data.metadata for e in events] == [metadata]
    assert events[0].data.model and events[0].data.model.name == MODEL
    assert events[0].data.counts == job.counts and events[0].data.error is None
    assert events[0].subject == f"/tenants/sdk-acme/jobs/{job.job_id}"


def test_cancel_stops_a_running_job_and_refuses_a_finished_one(sdk: Client, tmp_path: Path) -> None:
    big = tmp_path / "many.jsonl"  # some 20 shards of 256 KiB for 2 workers: still running when cancelled
    big.write_text("".join(json.dumps({**row, "id": f"{row['id']}-{n}"}) + "\n" for n in range(40) for row in ROWS))
    running = sdk.submit_file(big, MODEL, wait=False)

    sdk.jobs.cancel(running.job_id)
    ended = sdk.jobs.wait(running.job_id, timeout=180)

    assert ended.status == JobStatus.CANCELLED and ended.counts.records < 40 * len(ROWS)
    with pytest.raises(aiaas_client.ConflictError) as raised:
        sdk.jobs.cancel(sdk.submit_file(SAMPLE, MODEL, timeout=180).job_id)
    assert raised.value.status == 409 and raised.value.code == "JobAlreadyFinished"


def test_models_usage_and_keys(sdk: Client, stack: LocalHost, finished: aiaas_client.Job) -> None:
    assert MODEL in [m.name for m in sdk.models.list()]
    model = sdk.models.get(MODEL)
    assert ".jsonl" in model.input_types
    # The card typed where the platform reads it; the package's own keys kept as they are.
    assert model.card.name == MODEL and model.card.version in model.versions and model.card.features
    assert model.card.artifact and len(model.card.artifact.sha256) == 64
    assert model.card["drift"]["profileId"] == (model.card.model_extra or {})["drift"]["profileId"]
    # The job's drift section typed too: one verdict per feature of the card.
    assert finished.drift and [f.name for f in finished.drift.features] == model.card.features
    with pytest.raises(NotFoundError):
        sdk.models.get("no-such-model")
    usage = sdk.usage.get(group_by="model")
    assert usage.totals.jobs >= 1 and usage.totals.records >= len(ROWS)
    assert any(row.model and row.model.startswith(MODEL) for row in usage.items)
    assert usage.quota.records_per_day is not None

    created = sdk.keys.create("sdk-reader", "AIaaS.Reader")
    assert created.key and created.id in [k.id for k in sdk.keys.list()]
    assert all(k.key is None for k in sdk.keys.list())  # secrets are shown once
    with Client(stack.api_url, created.key) as reader:
        assert reader.jobs.get(finished.job_id).job_id == finished.job_id
        with pytest.raises(aiaas_client.PermissionDeniedError) as refused:
            reader.uploads.create(MODEL, "f.jsonl")
        assert refused.value.status == 403
        sdk.keys.revoke(created.id)
        with pytest.raises(aiaas_client.AuthenticationError) as revoked:
            reader.jobs.get(finished.job_id)
        assert revoked.value.status == 401 and revoked.value.code == "Unauthorized"


def test_subscriptions_dead_letters_and_redelivery(sdk: Client, finished: aiaas_client.Job) -> None:
    with WebhookReceiver() as hook:
        created = sdk.subscriptions.create(hook.url, event_types=["AIaaS.Job.Succeeded"], max_delivery_attempts=3)
        assert created.location and created.location.endswith(f"/v1/subscriptions/{created.subscription_id}")
        assert created.retry_policy and created.retry_policy.max_delivery_attempts == 3
        assert created.subscription_id in [s.subscription_id for s in sdk.subscriptions.list()]
        assert list(sdk.subscriptions.dead_letters(created.subscription_id)) == []

        event = next(e for e in sdk.events.list() if e.data.job_id == finished.job_id)
        answer = sdk.subscriptions.redeliver(created.subscription_id, event_ids=[event.id, "no-such-event"])
        assert answer.events == 1 and answer.not_found == ["no-such-event"]
        hook.wait_for(1, timeout=60)
        assert [e["id"] for e in hook.events] == [event.id]  # the original id, as Event Grid redelivers

    sdk.subscriptions.delete(created.subscription_id)
    with pytest.raises(NotFoundError):
        sdk.subscriptions.get(created.subscription_id)


def _some_broken(path: Path) -> Path:
    lines = [json.dumps(row) for row in ROWS[:25]]
    lines[2] = json.dumps({k: v for k, v in ROWS[2].items() if k != "mean radius"})
    lines[7] = json.dumps({**ROWS[7], "mean texture": "rough"})
    lines[8] = "this line is not JSON"
    lines[16] = "[1, 2, 3]"
    lines[23] = json.dumps({**ROWS[23], "worst area": True})
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_jobs_failed_records_are_listed_with_line_and_reason_across_pages(
    sdk: Client, sdk_key: str, stack: LocalHost, finished: aiaas_client.Job, tmp_path: Path
) -> None:
    job = sdk.submit_file(_some_broken(tmp_path / "some-broken.jsonl"), MODEL, timeout=180)
    assert job.status == JobStatus.PARTIALLY_SUCCEEDED and job.counts.failed == len(BROKEN)

    failed = list(job.errors(limit=2))  # pages of 2: three of them

    assert [(e.record_index, e.line, e.field, e.code) for e in failed] == [
        (index, index + 1, field, "InvalidRecord") for index, (field, _) in BROKEN.items()
    ]
    assert [e.id for e in failed] == [ROWS[2]["id"], ROWS[7]["id"], None, None, ROWS[23]["id"]]
    reasons = [phrase for _, phrase in BROKEN.values()]
    assert all(phrase in e.message for e, phrase in zip(failed, reasons, strict=True)), [e.message for e in failed]
    # The very entries of the job's errors.jsonl (the API adds the stamp's region).
    outbox = get_platform().blobs.read_bytes("tenant-sdk-acme", f"outbox/{job.job_id}/errors.jsonl").splitlines()
    assert [{k: v for k, v in e.to_api().items() if k != "region"} for e in failed] == [
        json.loads(line) for line in outbox
    ]
    assert list(finished.errors()) == []  # a job whose records all succeeded

    async def aread() -> list[aiaas_client.RecordError]:
        async with AsyncClient(stack.api_url, sdk_key) as client:
            return [e async for e in (await client.jobs.get(job.job_id)).aerrors(limit=3)]

    assert asyncio.run(aread()) == failed
