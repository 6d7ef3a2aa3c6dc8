"""The worker's use case: run one shard of a job, record it once, and let the last shard finalise the job."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared.domain.errors import InvalidInput, InvalidRecord, NotFound, PreconditionFailed
from shared.domain.events import terminal_event_id
from shared.domain.jobs import PLAN, Counts, Job, JobStatus, ResultPage, ShardMessage, json_lines, utcnow
from shared.domain.models import ModelRef
from shared.domain.tenants import container_for
from shared.inference.readers import Record, header_of_csv, reader_for
from shared.inference.remote import RemoteEndpointUnavailable
from shared.ports import Predictor
from shared.services import rollouts
from shared.services.dispatch import dispatch
from shared.services.drift import ShardSketch, after_drift, evaluate_job, record_sketch, start_sketch
from shared.services.outcomes import publish_terminal_event
from shared.services.platform import Platform

logger = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 50
PAGE_WRITERS = 2
MAX_PAGES_IN_FLIGHT = 4


INPUT_CHANGED = {
    "code": "InputChanged",
    "message": "the input blob was overwritten while the job ran; the new upload makes its own job",
}


def bind_parameters(predictor: Predictor, parameters: dict[str, Any]) -> Predictor:
    """The predictor for this job's parameters (zero-shot labels, say); admission already checked them."""
    if not parameters:
        return predictor
    bind = getattr(predictor, "with_parameters", None)
    if bind is None:
        raise InvalidInput(f"model {predictor.card.name} takes no parameters", code="InvalidParameters")
    bound: Predictor = bind(parameters)
    return bound


@dataclass
class ShardOutcome:
    counts: Counts = field(default_factory=Counts)
    error: dict[str, str] | None = None
    # Seconds spent in the model's predict (metering: the job's usage record sums them over its shards).
    compute_seconds: float = 0.0
    # The shard's drift sketch (shared.domain.drift doc); None: the model has no profile.
    sketch: dict[str, Any] | None = None
    # A rollout's comparison of the other version on the shard's records (services.rollouts); stats only.
    comparison: dict[str, Any] | None = None
    # The job was cancelled before the shard ran: recorded as skipped, with nothing counted.
    skipped: bool = False


@dataclass
class ComputeMeter:
    """Adds up the time a shard spends in the model's predict (wall clock, every call)."""

    seconds: float = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def run_shard(platform: Platform, message: ShardMessage) -> Job:
    """Idempotent: a redelivered shard rewrites its own result pages and is counted once."""
    try:
        job = platform.jobs.get_job(message.tenant_id, message.job_id)
    except NotFound:
        logger.warning("shard %s names no job; dropped", message.message_id)
        raise
    ids = {"tenant_id": job.tenant_id, "job_id": job.job_id}
    if message.kind == PLAN:
        from shared.services.planning import plan_job

        try:
            return plan_job(platform, message)
        except PreconditionFailed:
            return _fail_unplanned(platform, job, INPUT_CHANGED)
        except InvalidInput as err:
            return _fail_unplanned(platform, job, {"code": err.code, "message": err.message})
    if job.terminal:
        return job
    if job.cancel_requested_at:  # cancelled before this shard ran: it never runs
        return record_shard(platform, job.tenant_id, job.job_id, message.shard_index, ShardOutcome(skipped=True))
    if message.shard_index in job.shards_done:  # a redelivery: its first run may have died before dispatching
        return _settled(platform, job)
    if job.status == JobStatus.QUEUED:
        job = _mark_running(platform, job)
    logger.info("job %s shard %d/%d running", job.job_id, message.shard_index + 1, message.shard_count, extra=ids)
    outcome = ShardOutcome()
    meter = ComputeMeter()
    sketch: ShardSketch | None = None
    compared: Predictor | None = None
    try:
        with heartbeat(platform, job.tenant_id, job.job_id) as cancelled:
            card = platform.models.resolve(job.tenant_id, ModelRef(job.model_name, job.model_version))
            predictor = bind_parameters(platform.models.load(card), job.parameters)
            predictor = compared = rollouts.comparing(platform, job, predictor)  # a rollout's other version
            sketch = start_sketch(platform, card, message.message_id)
            outcome.counts = _process(platform, job, message, predictor, meter, sketch, cancelled)
            outcome.sketch = sketch.to_doc() if sketch else None
    except PreconditionFailed:
        outcome.error = INPUT_CHANGED
    except InvalidInput as err:
        outcome.error = {"code": err.code, "message": err.message}
    comparison, other_seconds = rollouts.comparison_of(compared)
    outcome.comparison = comparison
    outcome.compute_seconds = max(0.0, meter.seconds - other_seconds)  # the comparison is not the tenant's
    return record_shard(platform, job.tenant_id, job.job_id, message.shard_index, outcome)


def fail_shard(platform: Platform, message: ShardMessage, reason: str) -> Job:
    """A shard that kept failing (dead-lettered): its job fails with the reason instead of hanging."""
    outcome = ShardOutcome(error={"code": "ShardFailed", "message": reason})
    return record_shard(platform, message.tenant_id, message.job_id, message.shard_index, outcome)


def _fail_unplanned(platform: Platform, job: Job, error: dict[str, str]) -> Job:
    """A plan that cannot be made (or finished) fails its job with the reason.

    A job whose planner found no shard yet has none to complete: the plan message stands as its one shard,
    recorded failed. One whose first shards are already out ends with the error once they are recorded.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        if job.terminal or not (job.planning or job.shard_count == 0):
            break
        unplanned = job.shard_count == 0
        job.planning, job.updated_at = False, utcnow()
        if unplanned:
            job.shard_count = job.dispatched = 1
        elif job.error is None:
            job.error = error
        try:
            job = platform.jobs.replace_job(job)
        except PreconditionFailed:
            job = platform.jobs.get_job(job.tenant_id, job.job_id)
            continue
        if not unplanned:
            return _settled(platform, job)
        break
    return record_shard(platform, job.tenant_id, job.job_id, 0, ShardOutcome(error=error))


def record_shard(platform: Platform, tenant_id: str, job_id: str, shard_index: int, outcome: ShardOutcome) -> Job:
    """Adds the shard's counts to the job exactly once (ETag-guarded); the write that completes it finalises.

    The slot the shard held is free then: the dispatcher hands it out (to whichever tenant's turn it is).
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        job = platform.jobs.get_job(tenant_id, job_id)
        if job.terminal or shard_index in job.shards_done or shard_index in job.shards_skipped:
            return _settled(platform, job)
        if outcome.skipped:
            job.shards_skipped.append(shard_index)
            job.updated_at = utcnow()
            try:
                job = platform.jobs.replace_job(job)
            except PreconditionFailed:
                continue
            return _settled(platform, job)
        job.shards_done.append(shard_index)
        job.shard_compute_seconds[shard_index] = outcome.compute_seconds
        if outcome.comparison is not None:
            job.shard_comparisons[shard_index] = outcome.comparison
        record_sketch(job, shard_index, outcome.sketch)
        job.idle_sweeps = 0  # progress: a re-drive before this one was not fruitless
        job.counts.add(outcome.counts)
        if outcome.error and job.error is None:
            job.error = outcome.error
        job.updated_at = utcnow()
        try:
            job = platform.jobs.replace_job(job)
        except PreconditionFailed:
            continue
        return _settled(platform, job)
    raise PreconditionFailed(f"job {job_id} kept changing while shard {shard_index} was recorded")


def _settled(platform: Platform, job: Job) -> Job:
    """After a shard is recorded: finalise the job if that was its last, then hand out the freed slot."""
    job = finalise_if_complete(platform, job)
    dispatch(platform)
    return job


@contextmanager
def heartbeat(platform: Platform, tenant_id: str, job_id: str) -> Iterator[threading.Event]:
    """Touches the job every `heartbeat_seconds` while a shard runs, so that the sweeper (which re-drives jobs
    idle for the stall time) never takes a long shard for a lost one; it stops at the shard timeout, when the
    Functions host would have ended the run anyway.

    The same thread reads the job every `cancel_poll_seconds` and sets the event it yields once the job is
    cancelled (or ended): the shard checks that flag between batches, so a cancel costs no read per batch.
    """
    stop = threading.Event()
    cancelled = threading.Event()
    deadline = time.monotonic() + platform.shard_timeout_seconds
    poll = max(0.01, min(platform.heartbeat_seconds, platform.cancel_poll_seconds))

    def beat() -> None:
        touched = time.monotonic()
        while not stop.wait(poll) and time.monotonic() < deadline:
            try:
                job = platform.jobs.get_job(tenant_id, job_id)
                if job.terminal or job.cancel_requested_at:
                    cancelled.set()
                    return
                if time.monotonic() - touched < platform.heartbeat_seconds:
                    continue
                job.updated_at = utcnow()
                platform.jobs.replace_job(job)
                touched = time.monotonic()
            except PreconditionFailed:
                continue  # another writer touched the job just now: it looks alive already
            except Exception:
                # The run goes on; without heartbeats the sweeper may re-drive this shard (idempotent).
                logger.warning("heartbeat of job %s stopped", job_id, exc_info=True, extra={"job_id": job_id})
                return

    thread = threading.Thread(target=beat, name="shard-heartbeat", daemon=True)
    thread.start()
    try:
        yield cancelled
    finally:
        stop.set()
        thread.join()


def _mark_running(platform: Platform, job: Job) -> Job:
    job.status = JobStatus.RUNNING
    job.updated_at = utcnow()
    try:
        return platform.jobs.replace_job(job)
    except PreconditionFailed:
        return platform.jobs.get_job(job.tenant_id, job.job_id)


def finalise_if_complete(platform: Platform, job: Job) -> Job:
    """Ends a job whose shards are all recorded: outputs, terminal status, then its one event.

    Only the writer of the terminal status publishes; a redelivery that finds the job ended leaves an
    unpublished event to the sweeper, so that Event Grid sees as few duplicates as a crash allows.
    """
    if job.terminal or not (job.all_shards_done or job.cancel_settled):
        return job
    # A cancelled job's outputs hold what its shards finished; a partial run is no evidence of drift.
    outputs = _write_outputs(platform, job)
    drift = None if job.cancel_settled else evaluate_job(platform, job)
    for _ in range(MAX_CONFLICT_RETRIES):
        job.outputs.update(outputs)
        job.drift = drift
        job.status = job.decide_outcome()
        job.completed_at = job.completed_at or utcnow()
        job.updated_at = utcnow()
        job.event_id = terminal_event_id(job.job_id)
        try:
            job = platform.jobs.replace_job(job)
            break
        except PreconditionFailed:
            job = platform.jobs.get_job(job.tenant_id, job.job_id)
            if job.terminal:
                return job
    job = publish_terminal_event(platform, job)  # a drifted job's DriftDetected goes out right after its own
    if job.status == JobStatus.CANCELLED:  # nor of a rollout's arm: its evidence is whole jobs
        return job
    after_drift(platform, job)
    try:  # a rollout's evidence and decision: never the job's failure
        rollouts.on_job_finished(platform, job)
    except Exception:
        logger.warning(
            "rollout evidence of job %s not recorded", job.job_id, exc_info=True, extra={"job_id": job.job_id}
        )
    return job


def _process(
    platform: Platform,
    job: Job,
    message: ShardMessage,
    predictor: Predictor,
    meter: ComputeMeter | None = None,
    sketch: ShardSketch | None = None,
    cancelled: threading.Event | None = None,
) -> Counts:
    chunks = platform.blobs.iter_chunks(
        container_for(job.tenant_id),
        job.blob_path,
        start=message.byte_start,
        end=message.byte_end,
        etag=job.etag,
    )
    header = None
    if job.file_type == ".csv" and message.byte_start > 0:
        head = b"".join(platform.blobs.iter_chunks(container_for(job.tenant_id), job.blob_path, end=65536))
        header = header_of_csv(head)
    records = reader_for(job.file_type)(
        chunks,
        first_index=message.first_record_index,
        first_line=message.first_line,
        header=header,
        source_name=job.blob_path,
    )
    counts = Counts()
    # Pages are stored by a small pool while the next batch is parsed and scored (storage is I/O-bound).
    with ThreadPoolExecutor(max_workers=PAGE_WRITERS, thread_name_prefix="page-writer") as pool:
        pending: deque[Future[None]] = deque()
        pages = _pages(
            job, message, records, predictor, platform.batch_size, meter or ComputeMeter(), sketch, cancelled
        )
        for page in pages:
            pending.append(pool.submit(_store_page, platform, job, page))
            while len(pending) > MAX_PAGES_IN_FLIGHT:
                pending.popleft().result()
            counts.records += len(page.items) + len(page.errors)
            counts.succeeded += len(page.items)
            counts.failed += len(page.errors)
            if page.errors and counts.first_error is None:
                first = page.errors[0]
                counts.first_error = f"line {first['line']}: {first['message']}"
        for future in pending:
            future.result()
    return counts


def _store_page(platform: Platform, job: Job, page: ResultPage) -> None:
    """The page for the results API, and its lines as blocks of the output files (committed at the end).

    Every entry is encoded once: the same lines make the output blocks and, handed on with the page, are what
    the result store sizes its documents by (a store item is at most 2 MB; a page of embeddings is several).
    """
    container, base = container_for(job.tenant_id), f"outbox/{job.job_id}"
    block_id = f"{page.first_record_index:012d}"  # ids sort in record order; a redelivery restages the same ids
    page.encoded_items, page.encoded_errors = json_lines(page.items), json_lines(page.errors)
    if page.items:
        platform.blobs.stage_block(container, f"{base}/results.jsonl", block_id, page.encoded_items)
    if page.errors:
        platform.blobs.stage_block(container, f"{base}/errors.jsonl", block_id, page.encoded_errors)
    platform.results.put_page(page)
    page.encoded_items = page.encoded_errors = None  # the page may live on in the caller; its lines need not


def _pages(
    job: Job,
    message: ShardMessage,
    records: Iterator[Record],
    predictor: Predictor,
    batch_size: int,
    meter: ComputeMeter,
    sketch: ShardSketch | None = None,
    cancelled: threading.Event | None = None,
) -> Iterator[ResultPage]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= batch_size:
            if cancelled is not None and cancelled.is_set():  # the job was cancelled: stop before this batch
                logger.info("job %s shard %d stopped: cancelled", job.job_id, message.shard_index)
                return
            yield _run_batch(job, message, batch, predictor, meter, sketch)
            batch = []
    if batch and not (cancelled is not None and cancelled.is_set()):
        yield _run_batch(job, message, batch, predictor, meter, sketch)


def _run_batch(
    job: Job,
    message: ShardMessage,
    batch: list[Record],
    predictor: Predictor,
    meter: ComputeMeter,
    sketch: ShardSketch | None = None,
) -> ResultPage:
    errors: list[dict[str, Any]] = []
    ready: list[tuple[Record, Any]] = []
    for record in batch:
        if record.error is not None:
            errors.append(_error_entry(record, record.error))
            continue
        try:
            ready.append((record, predictor.prepare(record.value)))
        except InvalidRecord as err:
            errors.append(_error_entry(record, err))
    items: list[dict[str, Any]] = []
    if ready:
        outputs = _predict_isolating_failures(predictor, ready, errors, meter)
        items = [
            {"recordIndex": record.index, "id": record.record_id, "output": output}
            for (record, _), output in zip(ready, outputs, strict=True)
            if output is not None
        ]
        if sketch is not None:  # the scored records and their outputs, while they are in hand
            scored = [
                (record.value, output) for (record, _), output in zip(ready, outputs, strict=True) if output is not None
            ]
            sketch.add([value for value, _ in scored], [output for _, output in scored])
    errors.sort(key=lambda entry: entry["recordIndex"])
    return ResultPage(
        tenant_id=job.tenant_id,
        job_id=job.job_id,
        shard_index=message.shard_index,
        first_record_index=batch[0].index,
        last_record_index=batch[-1].index,
        items=items,
        errors=errors,
    )


def _predict_isolating_failures(
    predictor: Predictor, ready: list[tuple[Record, Any]], errors: list[dict[str, Any]], meter: ComputeMeter
) -> list[dict[str, Any] | None]:
    """Predicts the batch; if the model refuses it, predicts record by record so one bad record fails alone."""
    try:
        with meter.timed():
            return list(predictor.predict([prepared for _, prepared in ready]))
    except RemoteEndpointUnavailable:
        raise  # an outage, not a bad record: the shard is redelivered later
    except Exception:  # the runtime's own errors are not ours to name; the record-by-record pass reports them
        logger.warning("batch of %d failed in the model; retrying record by record", len(ready), exc_info=True)
    outputs: list[dict[str, Any] | None] = []
    for record, prepared in ready:
        try:
            with meter.timed():
                outputs.append(predictor.predict([prepared])[0])
        except Exception as err:
            errors.append(_error_entry(record, InvalidRecord(f"the model could not score this record: {err}")))
            outputs.append(None)
    return outputs


def _error_entry(record: Record, err: InvalidRecord) -> dict[str, Any]:
    return {
        "recordIndex": record.index,
        "line": record.line,
        "id": record.record_id,
        "field": err.field,
        "code": err.code,
        "message": err.message,
    }


def _write_outputs(platform: Platform, job: Job) -> dict[str, str]:
    """results.jsonl (and errors.jsonl when records failed): the blocks every page staged, committed in order."""
    container = container_for(job.tenant_id)
    base = f"outbox/{job.job_id}"
    outputs = {}
    if job.counts.succeeded or not job.counts.failed:
        outputs["results"] = f"{base}/results.jsonl"
    if job.counts.failed:
        outputs["errors"] = f"{base}/errors.jsonl"
    for path in outputs.values():
        platform.blobs.commit_staged(container, path, content_type="application/x-ndjson")
    return outputs
