"""Shard runs and finalisation over the fakes: the whole flow from an admitted upload to its one terminal event."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest

from shared.domain.errors import InvalidInput, PreconditionFailed
from shared.domain.jobs import PLAN, Job, JobStatus, ShardMessage
from shared.domain.models import ModelCard, ModelRef
from shared.domain.tenants import container_for
from shared.ports import Predictor
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import ShardOutcome, fail_shard, record_shard, run_shard
from tests.fakes import (
    API_URL,
    MODEL_NAME,
    Fakes,
    InMemoryJobStore,
    add_tenant,
    fakes_of,
    make_platform,
    model_package_dir,
    sample_bytes,
    upload,
)

CONTAINER = container_for("acme")


def sample_rows() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in sample_bytes("breast-cancer.jsonl").splitlines() if line.strip()]


def jsonl(rows: list[Any]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def admit(platform: Platform, data: bytes, name: str = "rows.jsonl") -> Job:
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
    assert job is not None and job.status == JobStatus.QUEUED
    return job


def run_queue(platform: Platform) -> list[ShardMessage]:
    """Runs every enqueued shard message, as the workers would, until the queue stays empty (a recorded shard
    lets the dispatcher send the next ones); returns the messages it ran."""
    ran: list[ShardMessage] = []
    while messages := platform.queue.drain():  # type: ignore[attr-defined]
        for message in messages:
            run_shard(platform, message)
        ran.extend(messages)
        if any(message.kind == PLAN for message in messages):
            break  # the callers look at the plan before its shards run
    return ran


def blob_lines(platform: Platform, path: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in platform.blobs.read_bytes(CONTAINER, path).splitlines()]


def all_items(platform: Platform, job: Job) -> list[dict[str, Any]]:
    return [item for page in platform.results.iter_pages("acme", job.job_id) for item in page.items]


def all_errors(platform: Platform, job: Job) -> list[dict[str, Any]]:
    return [error for page in platform.results.iter_pages("acme", job.job_id) for error in page.errors]


@pytest.fixture
def small_batches() -> Platform:
    """Batches of 10 records and 7-byte blob chunks: records cross both page and chunk boundaries."""
    platform = make_platform(batch_size=10)
    platform.blobs.chunk_size = 7  # type: ignore[attr-defined]
    add_tenant(platform, "acme")
    return platform


def test_a_jsonl_upload_runs_to_succeeded_with_one_result_per_row_and_one_event(small_batches: Platform) -> None:
    platform, fakes = small_batches, fakes_of(small_batches)
    rows = sample_rows()
    job = admit(platform, jsonl(rows))

    messages = run_queue(platform)

    assert len(messages) == job.shard_count == 1
    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED
    assert done.counts.to_dict() == {"records": len(rows), "succeeded": len(rows), "failed": 0}
    assert done.error is None and done.completed_at and done.event_published

    items = all_items(platform, job)
    assert [item["recordIndex"] for item in items] == list(range(len(rows)))
    assert [item["id"] for item in items] == [row["id"] for row in rows]
    assert all(item["output"]["label"] in {"malignant", "benign"} for item in items)
    accuracy = sum(item["output"]["label"] == row["expected"] for item, row in zip(items, rows, strict=True))
    assert accuracy / len(rows) > 0.9  # the real model ran, not a stand-in

    results_path = f"outbox/{job.job_id}/results.jsonl"
    lines = blob_lines(platform, results_path)
    assert [line["id"] for line in lines] == [row["id"] for row in rows]
    assert [line["recordIndex"] for line in lines] == list(range(len(rows)))
    assert lines == items
    with pytest.raises(Exception, match="not found"):
        platform.blobs.read_bytes(CONTAINER, f"outbox/{job.job_id}/errors.jsonl")

    events = fakes.events.events
    assert len(events) == 1
    event = events[0]
    assert event.event_type == "AIaaS.Job.Succeeded"
    assert event.topic == "acme"
    assert event.subject == f"/tenants/acme/jobs/{job.job_id}"
    data = event.data
    assert data["jobId"] == job.job_id and data["tenantId"] == "acme" and data["status"] == "succeeded"
    assert data["model"] == {"name": MODEL_NAME, "version": "1"}
    assert data["input"] == {"blobPath": f"inbox/{MODEL_NAME}/rows.jsonl", "etag": job.etag}
    assert data["counts"] == {"records": len(rows), "succeeded": len(rows), "failed": 0}
    assert data["links"] == {
        "job": f"{API_URL}/v1/jobs/{job.job_id}",
        "results": f"{API_URL}/v1/jobs/{job.job_id}/results",
        "outputBlob": results_path,
    }
    assert "error" not in data


def test_redelivering_a_shard_after_completion_changes_nothing(platform: Platform, fakes: Fakes) -> None:
    rows = sample_rows()[:20]
    admit(platform, jsonl(rows))
    message = run_queue(platform)[0]
    before = platform.jobs.get_job("acme", message.job_id)
    writes, puts = fakes.jobs.writes, fakes.results.puts

    for _ in range(3):
        after = run_shard(platform, message)

    assert after.status == JobStatus.SUCCEEDED
    assert after.counts.to_dict() == {"records": 20, "succeeded": 20, "failed": 0}
    assert platform.jobs.get_job("acme", message.job_id).to_doc() == before.to_doc()
    assert (fakes.jobs.writes, fakes.results.puts) == (writes, puts)
    assert len(fakes.events.events) == 1


def test_a_shard_redelivered_before_the_job_finalised_is_counted_once(platform: Platform, fakes: Fakes) -> None:
    """Two shards; shard 0 runs twice (a redelivery) before shard 1: its records are counted once."""
    rows = sample_rows()[:6]
    data = jsonl(rows)
    half = data.index(b"\n", len(data) // 2) + 1
    job = admit(platform, data)
    platform.queue.drain()  # type: ignore[attr-defined]
    # Re-plan the job as two shards (the planner makes one today); the records split at a line boundary.
    stored = platform.jobs.get_job("acme", job.job_id)
    stored.shard_count = 2
    platform.jobs.replace_job(stored)
    first_of_second = data[:half].count(b"\n")
    shard0 = ShardMessage("acme", job.job_id, 0, 2, 0, half, 0)
    shard1 = ShardMessage("acme", job.job_id, 1, 2, half, len(data), first_of_second)

    run_shard(platform, shard0)
    run_shard(platform, shard0)
    assert platform.jobs.get_job("acme", job.job_id).status == JobStatus.RUNNING
    assert fakes.events.events == []
    run_shard(platform, shard1)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED
    assert done.counts.to_dict() == {"records": 6, "succeeded": 6, "failed": 0}
    assert [item["id"] for item in all_items(platform, job)] == [row["id"] for row in rows]
    assert [line["id"] for line in blob_lines(platform, f"outbox/{job.job_id}/results.jsonl")] == [
        row["id"] for row in rows
    ]
    assert len(fakes.events.events) == 1


def broken_file() -> tuple[bytes, list[dict[str, Any]]]:
    """Four good rows, four broken ones and a blank line; returns the file and the expected errors."""
    rows = sample_rows()[:4]
    missing = dict(rows[0], id="missing")
    del missing["mean area"]
    non_numeric = dict(rows[1], id="non-numeric")
    non_numeric["worst radius"] = "large"
    lines = [
        orjson.dumps(rows[0]),  # line 1
        b'{"id": "bad-json", "mean radius": ',  # line 2
        orjson.dumps(rows[1]),  # line 3
        b"",  # line 4: blank, skipped
        orjson.dumps(missing),  # line 5
        orjson.dumps(rows[2]),  # line 6
        orjson.dumps(non_numeric),  # line 7
        b"[1, 2, 3]",  # line 8
        orjson.dumps(rows[3]),  # line 9
    ]
    expected = [
        {"line": 2, "field": None, "id": None},
        {"line": 5, "field": "mean area", "id": "missing"},
        {"line": 7, "field": "worst radius", "id": "non-numeric"},
        {"line": 8, "field": None, "id": None},
    ]
    return b"\n".join(lines) + b"\n", expected


def test_a_file_with_some_broken_records_is_partially_succeeded_with_an_errors_file(
    platform: Platform, fakes: Fakes
) -> None:
    data, expected = broken_file()
    job = admit(platform, data)

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.PARTIALLY_SUCCEEDED
    assert done.counts.to_dict() == {"records": 8, "succeeded": 4, "failed": 4}
    assert done.error is not None and done.error["code"] == "SomeRecordsFailed"

    errors = blob_lines(platform, f"outbox/{job.job_id}/errors.jsonl")
    assert [{k: e[k] for k in ("line", "field", "id")} for e in errors] == expected
    indices = [e["recordIndex"] for e in errors]
    assert indices == sorted(set(indices))
    assert all(e["message"] for e in errors)
    assert "mean area" in errors[1]["message"] and "large" in errors[2]["message"]
    assert errors == all_errors(platform, job)
    results = blob_lines(platform, f"outbox/{job.job_id}/results.jsonl")
    assert [r["id"] for r in results] == [row["id"] for row in sample_rows()[:4]]
    assert not {r["recordIndex"] for r in results} & set(indices)  # a record is a result or an error

    events = fakes.events.events
    assert [e.event_type for e in events] == ["AIaaS.Job.PartiallySucceeded"]
    assert events[0].data["status"] == "partially_succeeded"
    assert events[0].data["error"]["code"] == "SomeRecordsFailed"
    assert events[0].data["counts"] == {"records": 8, "succeeded": 4, "failed": 4}
    assert events[0].data["links"]["outputBlob"] == f"outbox/{job.job_id}/results.jsonl"


def test_a_file_whose_every_record_is_broken_fails_with_all_records_failed(platform: Platform, fakes: Fakes) -> None:
    job = admit(platform, b'{"id": 1}\nnot json\n[1]\n{"mean radius": "x"}\n')

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.FAILED
    assert done.counts.to_dict() == {"records": 4, "succeeded": 0, "failed": 4}
    assert done.error is not None and done.error["code"] == "AllRecordsFailed"
    assert len(blob_lines(platform, f"outbox/{job.job_id}/errors.jsonl")) == 4
    events = fakes.events.events
    assert [e.event_type for e in events] == ["AIaaS.Job.Failed"]
    assert events[0].data["error"]["code"] == "AllRecordsFailed"


def test_a_file_of_only_blank_lines_fails_as_empty_input(platform: Platform, fakes: Fakes) -> None:
    job = admit(platform, b"\n  \n\n")

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.FAILED
    assert done.error is not None and done.error["code"] == "EmptyInput"
    assert [e.data["error"]["code"] for e in fakes.events.events] == ["EmptyInput"]


def test_an_input_overwritten_between_admission_and_run_fails_with_input_changed(
    platform: Platform, fakes: Fakes
) -> None:
    rows = sample_rows()[:5]
    job = admit(platform, jsonl(rows))
    upload(platform, "acme", job.blob_path, jsonl(rows[:2]))  # the tenant uploads again under the same name

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.FAILED
    assert done.error is not None and done.error["code"] == "InputChanged"
    assert all_items(platform, job) == []
    events = fakes.events.events
    assert [e.event_type for e in events] == ["AIaaS.Job.Failed"]
    assert events[0].data["error"]["code"] == "InputChanged"


def test_a_csv_with_a_header_row_runs_one_result_per_row(small_batches: Platform) -> None:
    platform, fakes = small_batches, fakes_of(small_batches)
    data = sample_bytes("breast-cancer.csv")
    row_count = len([line for line in data.splitlines()[1:] if line.strip()])
    job = admit(platform, data, "rows.csv")

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.counts.to_dict() == {"records": row_count, "succeeded": row_count, "failed": 0}
    lines = blob_lines(platform, f"outbox/{job.job_id}/results.jsonl")
    assert [line["recordIndex"] for line in lines] == list(range(row_count))
    assert all(line["id"] is None for line in lines)  # the sample CSV has no id column
    assert [e.event_type for e in fakes.events.events] == ["AIaaS.Job.Succeeded"]


def test_a_csv_with_crlf_an_id_column_and_a_short_row(platform: Platform) -> None:
    features = platform.models.resolve("acme", ModelRef(MODEL_NAME)).raw["features"]
    header = ",".join(["id", *(f'"{name}"' for name in features)])
    good = ",".join(["a", *["1.5"] * len(features)])
    short = ",".join(["b", "1.5"])
    data = "\r\n".join([header, good, short, good.replace("a,", "c,", 1)]).encode() + b"\r\n"
    job = admit(platform, data, "rows.csv")

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.PARTIALLY_SUCCEEDED
    assert [item["id"] for item in all_items(platform, job)] == ["a", "c"]
    [error] = all_errors(platform, job)
    assert (error["line"], error["recordIndex"]) == (3, 1)


def test_fail_shard_ends_the_job_failed_with_its_reason_and_one_event(platform: Platform, fakes: Fakes) -> None:
    admit(platform, jsonl(sample_rows()[:3]))
    [message] = platform.queue.drain()  # type: ignore[attr-defined]

    fail_shard(platform, message, "the shard was dead-lettered after 5 deliveries")
    fail_shard(platform, message, "the shard was dead-lettered after 5 deliveries")
    run_shard(platform, message)  # a late delivery of the same message

    done = platform.jobs.get_job("acme", message.job_id)
    assert done.status == JobStatus.FAILED
    assert done.error == {"code": "ShardFailed", "message": "the shard was dead-lettered after 5 deliveries"}
    events = fakes.events.events
    assert len(events) == 1 and events[0].event_type == "AIaaS.Job.Failed"
    assert events[0].data["error"]["message"] == "the shard was dead-lettered after 5 deliveries"


class PoisonablePredictor:
    """Wraps the real model; its batch predict raises when any row carries the poison value."""

    POISON = 666.0

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.card = inner.card
        self.calls: list[int] = []

    def prepare(self, record: Any) -> Any:
        return self.inner.prepare(record)

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        self.calls.append(len(prepared))
        if any(row[0] == self.POISON for row in prepared):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : poisoned")
        return self.inner.predict(prepared)


class PoisonRegistry:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.predictor: PoisonablePredictor | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def load(self, card: ModelCard) -> Predictor:
        self.predictor = self.predictor or PoisonablePredictor(self.inner.load(card))
        return self.predictor


def test_a_record_the_model_cannot_score_fails_alone(platform: Platform, fakes: Fakes) -> None:
    registry = PoisonRegistry(platform.models)
    platform.models = registry
    rows = sample_rows()[:6]
    rows[3] = dict(rows[3], id="poison", **{"mean radius": PoisonablePredictor.POISON})
    job = admit(platform, jsonl(rows))

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.PARTIALLY_SUCCEEDED
    assert done.counts.to_dict() == {"records": 6, "succeeded": 5, "failed": 1}
    assert [item["id"] for item in all_items(platform, job)] == [r["id"] for r in rows if r["id"] != "poison"]
    [error] = blob_lines(platform, f"outbox/{job.job_id}/errors.jsonl")
    assert (error["recordIndex"], error["id"], error["line"]) == (3, "poison", 4)
    assert "poisoned" in error["message"]
    assert registry.predictor is not None and registry.predictor.calls[0] == 6  # the batch was tried first
    assert len(fakes.events.events) == 1


class ConflictOnFinalise(InMemoryJobStore):
    """Another writer touches the job (a new _etag) just before the first terminal write lands."""

    def __init__(self) -> None:
        super().__init__()
        self.injected = 0

    def replace_job(self, job: Job) -> Job:
        if job.terminal and self.injected == 0:
            self.injected += 1
            current = self.get_job(job.tenant_id, job.job_id)
            current.updated_at = job.updated_at
            super().replace_job(current)
        return super().replace_job(job)


def test_a_write_conflict_while_finalising_keeps_the_output_links() -> None:
    platform = make_platform()
    platform.jobs = ConflictOnFinalise()
    add_tenant(platform, "acme")
    job = admit(platform, jsonl(sample_rows()[:4]))

    run_queue(platform)

    assert platform.jobs.injected == 1  # type: ignore[attr-defined]
    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED
    assert done.outputs.get("results") == f"outbox/{job.job_id}/results.jsonl"
    [event] = platform.events.events  # type: ignore[attr-defined]
    assert event.data["links"]["outputBlob"] == f"outbox/{job.job_id}/results.jsonl"


# Concurrency: the last of two shards finalises the job exactly once, however their writes interleave.


def two_shard_job(platform: Platform, trial: int) -> Job:
    job = Job(
        tenant_id="acme",
        job_id=f"job-{trial:03d}",
        model_name=MODEL_NAME,
        model_version="1",
        blob_path=f"inbox/{MODEL_NAME}/{trial}.jsonl",
        etag="0x1",
        file_type=".jsonl",
        content_length=100,
        shard_count=2,
    )
    assert platform.jobs.create_job(job)
    return job


def test_two_shards_recorded_at_the_same_time_finalise_the_job_once(platform: Platform, fakes: Fakes) -> None:
    trials = 50
    outcomes = {
        0: ShardOutcome(),
        1: ShardOutcome(),
    }
    outcomes[0].counts.records, outcomes[0].counts.succeeded = 7, 7
    outcomes[1].counts.records, outcomes[1].counts.succeeded, outcomes[1].counts.failed = 5, 3, 2
    failures: list[BaseException] = []
    fakes.jobs.read_delay = 0.001  # both threads read before either writes: the ETag race really happens

    for trial in range(trials):
        job = two_shard_job(platform, trial)
        barrier = threading.Barrier(2)

        def record(shard_index: int, job_id: str = job.job_id, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                record_shard(platform, "acme", job_id, shard_index, outcomes[shard_index])
            except BaseException as err:  # re-raised in the main thread below
                failures.append(err)

        threads = [threading.Thread(target=record, args=(index,)) for index in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

    assert failures == []
    assert fakes.jobs.conflicts > 0  # the race was exercised, not dodged by scheduling
    for trial in range(trials):
        job_id = f"job-{trial:03d}"
        done = platform.jobs.get_job("acme", job_id)
        assert done.status == JobStatus.PARTIALLY_SUCCEEDED, job_id
        assert done.counts.to_dict() == {"records": 12, "succeeded": 10, "failed": 2}, job_id
        assert sorted(done.shards_done) == [0, 1]
        assert done.event_published
        assert len(fakes.events.of_job(job_id)) == 1, job_id
    assert len(fakes.events.events) == trials


def test_a_missing_job_raises_for_a_stray_message(platform: Platform) -> None:
    with pytest.raises(Exception, match="not found"):
        run_shard(platform, ShardMessage("acme", "no-such-job", 0, 1))


def test_record_shard_gives_up_only_after_many_conflicts(platform: Platform) -> None:
    """A store that always loses the race surfaces PreconditionFailed (the message is retried), not a hang."""
    job = two_shard_job(platform, 999)

    class AlwaysStale(InMemoryJobStore):
        def replace_job(self, job: Job) -> Job:
            raise PreconditionFailed("changed")

    store = AlwaysStale()
    store.docs = platform.jobs.docs  # type: ignore[attr-defined]
    platform.jobs = store
    with pytest.raises(PreconditionFailed):
        record_shard(platform, "acme", job.job_id, 0, ShardOutcome())


def test_the_same_shard_delivered_twice_at_once_publishes_one_event(fakes: Fakes, platform: Platform) -> None:
    """A message whose lock expired runs on two workers at once: one job outcome, one terminal event."""
    trials = 20
    rows = sample_rows()[:3]
    fakes.jobs.read_delay = 0.001
    failures: list[BaseException] = []
    job_ids = []
    for trial in range(trials):
        job = admit(platform, jsonl(rows), f"same-{trial}.jsonl")
        job_ids.append(job.job_id)
        [message] = platform.queue.drain()  # type: ignore[attr-defined]
        barrier = threading.Barrier(2)

        def deliver(message: ShardMessage = message, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                run_shard(platform, message)
            except BaseException as err:  # re-raised in the main thread below
                failures.append(err)

        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

    assert failures == []
    for job_id in job_ids:
        done = platform.jobs.get_job("acme", job_id)
        assert done.status == JobStatus.SUCCEEDED
        assert done.counts.to_dict() == {"records": 3, "succeeded": 3, "failed": 0}
    assert {job_id: len(fakes.events.of_job(job_id)) for job_id in job_ids} == dict.fromkeys(job_ids, 1)


def _publish_copy(platform: Platform, tmp_path: Any, name: str, **card_fields: Any) -> None:
    """Publishes the built package again as acme's private model `name`, its card changed by `card_fields`."""
    source = model_package_dir()
    card = orjson.loads((source / "card.json").read_bytes())
    card.update(name=name, **card_fields)
    (tmp_path / "card.json").write_bytes(orjson.dumps(card))
    (tmp_path / "model.onnx").write_bytes((source / "model.onnx").read_bytes())
    for item in card.get("files") or []:  # the drift profile, say
        (tmp_path / item["file"]).write_bytes((source / item["file"]).read_bytes())
    platform.models.publish_package(tmp_path, tenant="acme")  # type: ignore[attr-defined]


def test_a_model_card_with_small_shards_spreads_one_file_over_many_shards(
    platform: Platform, fakes: Fakes, tmp_path: Any
) -> None:
    """Heavy models (text) name a small "shardBytes": one file then runs on many workers, counted once."""
    _publish_copy(platform, tmp_path, "small-shards", shardBytes=4096)
    rows = [dict(row, id=f"row-{i}") for i, row in enumerate(sample_rows() * 3)]
    data = jsonl(rows)
    path = "inbox/small-shards/rows.jsonl"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
    assert job is not None and job.shard_bytes == 4096

    run_queue(platform)  # the plan message
    planned = platform.jobs.get_job("acme", job.job_id)
    longest_line = max(len(line) + 1 for line in data.splitlines())
    sizes = [end - start for start, end, *_ in planned.shard_plan]
    assert planned.shard_count == len(sizes) > 50  # ~340 KB in ~4 KiB shards, each cut at a line end
    assert sum(sizes) == len(data) and all(size < 4096 + longest_line for size in sizes)
    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.counts.to_dict() == {"records": len(rows), "succeeded": len(rows), "failed": 0}
    assert [item["id"] for item in all_items(platform, job)] == [row["id"] for row in rows]
    assert len(fakes.events.events) == 1
    assert done.public_view(API_URL)["shards"] == {"count": done.shard_count, "done": done.shard_count}


@pytest.mark.parametrize(
    ("field", "value"), [("shardBytes", 100), ("shardBytes", "big"), ("errorThreshold", -2), ("errorThreshold", True)]
)
def test_a_card_with_a_bad_number_is_refused_at_registration(
    platform: Platform, tmp_path: Any, field: str, value: Any
) -> None:
    with pytest.raises(InvalidInput, match=field):
        _publish_copy(platform, tmp_path, "bad-numbers", **{field: value})


def _admit_a_file_to_plan(platform: Platform, tmp_path: Any) -> tuple[Job, list[dict[str, Any]]]:
    """A ~340 KB file for a model of 4 KiB shards: admitted, with its plan message queued."""
    _publish_copy(platform, tmp_path, "small-shards", shardBytes=4096)
    rows = [dict(row, id=f"row-{i}") for i, row in enumerate(sample_rows() * 3)]
    path = "inbox/small-shards/rows.jsonl"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, jsonl(rows)))
    assert job is not None
    return job, rows


def test_a_file_overwritten_before_it_was_planned_fails_its_job_with_the_reason(
    platform: Platform, fakes: Fakes, tmp_path: Any
) -> None:
    """The plan cannot be made (the blob's ETag moved on): the job ends, it does not wait for shards it never had."""
    job, rows = _admit_a_file_to_plan(platform, tmp_path)
    assert job.shard_count == 0  # waiting for its plan
    upload(platform, "acme", job.blob_path, jsonl(rows * 2))  # the tenant uploads again before the plan runs

    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.FAILED
    assert done.error is not None and done.error["code"] == "InputChanged"
    assert [event.data["jobId"] for event in fakes.events.events] == [job.job_id]


def test_a_big_files_first_shards_run_while_the_planner_still_reads_it(
    platform: Platform, fakes: Fakes, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan is recorded as it is found: workers take its first shards while the rest of the file is read."""
    from shared.services import planning

    monkeypatch.setattr(planning, "PLAN_RECORD_SECONDS", 0.0)
    job, rows = _admit_a_file_to_plan(platform, tmp_path)
    read = platform.blobs.iter_chunks
    done_while_planning: list[int] = []

    def planner_read_with_workers_running(container: str, blob: str, **kw: Any) -> Any:
        for n, chunk in enumerate(read(container, blob, **kw)):
            yield chunk
            if kw.get("start", 0) == 0 and kw.get("end") is None and n == 3:  # the planner, a few chunks in
                for message in platform.queue.drain():  # type: ignore[attr-defined]
                    run_shard(platform, message)  # another worker, meanwhile
                seen = platform.jobs.get_job("acme", job.job_id)
                assert seen.planning and not seen.terminal
                done_while_planning.extend(seen.shards_done)

    monkeypatch.setattr(platform.blobs, "iter_chunks", planner_read_with_workers_running)
    run_queue(platform)  # the plan message
    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done_while_planning, "shards ran before the plan was whole"
    assert done.status == JobStatus.SUCCEEDED and not done.planning, done.error
    assert done.counts.to_dict() == {"records": len(rows), "succeeded": len(rows), "failed": 0}
    assert [item["id"] for item in all_items(platform, job)] == [row["id"] for row in rows]
    assert len(fakes.events.events) == 1


def test_a_planner_that_died_half_way_is_resumed_by_the_redelivered_plan_message(
    platform: Platform, fakes: Fakes, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.services import planning

    monkeypatch.setattr(planning, "PLAN_RECORD_SECONDS", 0.0)
    job, rows = _admit_a_file_to_plan(platform, tmp_path)
    [plan_message] = platform.queue.drain()  # type: ignore[attr-defined]
    read = platform.blobs.iter_chunks

    def dies_half_way(container: str, blob: str, **kw: Any) -> Any:
        for n, chunk in enumerate(read(container, blob, **kw)):
            if n == 3:
                raise ConnectionResetError("the worker's connection went with it")
            yield chunk

    monkeypatch.setattr(platform.blobs, "iter_chunks", dies_half_way)
    with pytest.raises(ConnectionResetError):
        run_shard(platform, plan_message)
    half = platform.jobs.get_job("acme", job.job_id)
    assert half.planning and half.shard_count > 0 and not half.all_shards_done
    monkeypatch.setattr(platform.blobs, "iter_chunks", read)
    platform.queue.enqueue([plan_message])  # the queue redelivers it
    run_queue(platform)
    run_queue(platform)

    done = platform.jobs.get_job("acme", job.job_id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.shard_plan[: half.shard_count] == half.shard_plan
    assert [item["id"] for item in all_items(platform, job)] == [row["id"] for row in rows]
    assert len(fakes.events.events) == 1
