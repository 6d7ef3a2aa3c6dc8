"""Jobs, their shards and their life cycle: pure data and rules, no I/O."""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from shared.domain.errors import InvalidInput
from shared.domain.models import ModelRef

INBOX_PREFIX = "inbox/"
OUTBOX_PREFIX = "outbox/"
FILE_TYPES = (".jsonl", ".csv", ".txt", ".png", ".jpg", ".jpeg", ".zip")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    # Stopped by its tenant (POST /api/v1/jobs/{id}/cancel): what ran before the stop stays readable.
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.PARTIALLY_SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED, JobStatus.CANCELLED}
)
# A job's metadata: string pairs a tenant attaches to route its events (a Logic App's condition) without a lookup.
MAX_METADATA_PAIRS, MAX_METADATA_VALUE_CHARS = 16, 256
METADATA_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def validate_metadata(value: object) -> dict[str, str]:
    """The metadata as given, checked: at most 16 pairs, keys of 1-64 [A-Za-z0-9_.-], string values <= 256."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be an object of string keys and string values", code="InvalidMetadata")
    if len(value) > MAX_METADATA_PAIRS:
        raise InvalidInput(
            f"metadata has {len(value)} pairs; at most {MAX_METADATA_PAIRS} are allowed", code="InvalidMetadata"
        )
    for key, item in value.items():
        if not isinstance(key, str) or not METADATA_KEY.fullmatch(key):
            shown = str(key)[:64]
            raise InvalidInput(
                f"metadata key {shown!r} must be 1-64 characters of letters, digits, '_', '.' or '-'",
                code="InvalidMetadata",
            )
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_CHARS:
            raise InvalidInput(
                f"metadata value of {key!r} must be a string of at most {MAX_METADATA_VALUE_CHARS} characters",
                code="InvalidMetadata",
            )
    return dict(value)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class InboxPath:
    """An upload's path inside its tenant's container: `inbox/<model>[@sel]/<sub/path>/<file>`."""

    blob_path: str
    model: ModelRef
    file_type: str

    @classmethod
    def parse(cls, blob_path: str) -> InboxPath:
        if not blob_path.startswith(INBOX_PREFIX):
            raise InvalidInput(f"{blob_path!r} is not under {INBOX_PREFIX}", code="NotAnInboxPath")
        parts = blob_path.removeprefix(INBOX_PREFIX).split("/")
        if len(parts) < 2 or not all(parts):
            raise InvalidInput(
                f"{blob_path!r} must be inbox/<model>/<file> (optionally with sub-folders)",
                code="NotAnInboxPath",
            )
        model = ModelRef.parse(parts[0])
        return cls(blob_path=blob_path, model=model, file_type=file_type_of(parts[-1]))


def file_type_of(filename: str) -> str:
    return posixpath.splitext(filename)[1].lower()


def job_id_for(
    tenant_id: str, blob_path: str, etag: str, model_key: str, parameters: dict[str, Any] | None = None
) -> str:
    """Deterministic: a replayed event makes the same id (so no second job); a new ETag makes a new job."""
    parts = [tenant_id, blob_path, etag.strip('"'), model_key]
    if parameters:
        parts.append(orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS).decode())
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


PLAN = "plan"
SHARD = "shard"
# A W3C traceparent is 55 characters (version 00); later versions may append fields, so some room is left.
MAX_TRACEPARENT_CHARS = 128


def traceparent_of(value: object) -> str | None:
    """A trace context as read from a message or a document: a short string, else None (telemetry never fails
    a shard: a malformed one only starts a trace of its own)."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TRACEPARENT_CHARS else None


@dataclass(frozen=True)
class ShardMessage:
    """One unit of work on the job queue: a byte range of the input blob and where its records start.

    A `plan` message asks a worker to find the line boundaries of a big file and enqueue its shards.
    """

    tenant_id: str
    job_id: str
    shard_index: int
    shard_count: int
    byte_start: int = 0
    byte_end: int | None = None
    first_record_index: int = 0
    first_line: int = 1
    kind: str = SHARD
    # The job's W3C trace context (shared.telemetry): every run of this shard joins the job's one trace.
    traceparent: str | None = None

    @property
    def message_id(self) -> str:
        return f"{self.job_id}:plan" if self.kind == PLAN else f"{self.job_id}:{self.shard_index}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tenantId": self.tenant_id,
            "jobId": self.job_id,
            "shardIndex": self.shard_index,
            "shardCount": self.shard_count,
            "byteStart": self.byte_start,
            "byteEnd": self.byte_end,
            "firstRecordIndex": self.first_record_index,
            "firstLine": self.first_line,
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardMessage:
        try:
            return cls(
                tenant_id=str(data["tenantId"]),
                job_id=str(data["jobId"]),
                shard_index=int(data["shardIndex"]),
                shard_count=int(data["shardCount"]),
                byte_start=int(data.get("byteStart") or 0),
                byte_end=None if data.get("byteEnd") is None else int(data["byteEnd"]),
                first_record_index=int(data.get("firstRecordIndex") or 0),
                first_line=int(data.get("firstLine") or 1),
                kind=PLAN if data.get("kind") == PLAN else SHARD,
                traceparent=traceparent_of(data.get("traceparent")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidInput(f"malformed shard message: {err}", code="MalformedMessage") from err


@dataclass
class Counts:
    records: int = 0
    succeeded: int = 0
    failed: int = 0
    # The first failed record's reason, so a job's error says what to fix without opening errors.jsonl.
    first_error: str | None = None

    def add(self, other: Counts) -> None:
        self.records += other.records
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.first_error = self.first_error or other.first_error

    def to_dict(self) -> dict[str, int]:
        return {"records": self.records, "succeeded": self.succeeded, "failed": self.failed}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, first_error: str | None = None) -> Counts:
        data = data or {}
        return cls(int(data.get("records", 0)), int(data.get("succeeded", 0)), int(data.get("failed", 0)), first_error)


@dataclass
class Job:
    """A job: one input blob run through one model version, for one tenant."""

    tenant_id: str
    job_id: str
    model_name: str
    model_version: str | None
    blob_path: str
    etag: str
    status: JobStatus = JobStatus.QUEUED
    file_type: str = ""
    content_length: int = 0
    created_at: str = field(default_factory=utcnow)
    updated_at: str = field(default_factory=utcnow)
    completed_at: str | None = None
    shard_count: int = 1
    # Bytes per shard for this job's model (its card's "shardBytes", else the platform's); 0: the platform's.
    shard_bytes: int = 0
    shards_done: list[int] = field(default_factory=list)
    # Seconds spent in the model's predict, per recorded shard (metering): recorded with the shard, so a
    # redelivered shard has one figure, never two added up.
    shard_compute_seconds: dict[int, float] = field(default_factory=dict)
    # Drift sketches of the inputs and outputs, per recorded shard (shared.domain.drift docs), recorded like
    # shard_compute_seconds; bounded (services.drift folds them past a count) so the job stays far under 2 MB.
    shard_sketches: dict[int, dict[str, Any]] = field(default_factory=dict)
    # The job's drift section (contract "Drift and rollouts"), set at finalise; None: the model has no profile.
    drift: dict[str, Any] | None = None
    # The dispatch cursor: shards [0, dispatched) were handed to the queue; the rest are the job's backlog,
    # which the dispatcher (services.dispatch) hands out as the tenant's share of the fleet allows.
    dispatched: int = 0
    # The planner's cut of a big file: [byte_start, byte_end, first_record_index, first_line] per shard.
    shard_plan: list[list[int]] = field(default_factory=list)
    # True while the planner is still reading the file: the shards it found so far (shard_count of them) are
    # already the backlog, so they run while it reads on; the job can only end once the plan is whole.
    planning: bool = False
    counts: Counts = field(default_factory=Counts)
    error: dict[str, str] | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    # The terminal event is an outbox entry on the job: recorded with the terminal status, then published.
    event_id: str | None = None
    event_published: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    # Record failures tolerated before the job counts as failed (Azure ML's error_threshold); -1: any number.
    error_threshold: int = -1
    sweeps: int = 0
    # Re-drives since the job last made progress (a shard recorded): the sweeper gives up on this count, so a
    # long job that was re-driven now and then for a slow queue is never failed for its total.
    idle_sweeps: int = 0
    # The region of the stamp that took the job (regional stamps): its results and its events were made there.
    region: str = ""
    # The W3C trace context of the job's admission (shared.telemetry; None when telemetry is off): its shard
    # messages carry it, so the shard runs, the finaliser and the sweeper's re-drives continue the same trace.
    traceparent: str | None = None
    # Rollouts: the arm admission chose when the model's alias had a canary or shadow ({"alias", "arm",
    # "stableVersion", "canaryVersion"?, "shadowVersion"?, "rolloutId"}), and per recorded shard the stats of
    # running the other version on its records (compared, agreement sum, failures, seconds): never outputs.
    rollout: dict[str, Any] | None = None
    shard_comparisons: dict[int, dict[str, Any]] = field(default_factory=dict)
    # The tenant's metadata (validate_metadata), echoed in the job view and in every event of the job.
    metadata: dict[str, str] = field(default_factory=dict)
    # When the tenant asked to stop the job (services.cancel): nothing more is dispatched, queued shards are
    # skipped, running ones stop at their next batch; the last of them to be recorded ends the job cancelled.
    cancel_requested_at: str | None = None
    # Shards that never ran because the job was cancelled first (recorded so that none counts as in flight).
    shards_skipped: list[int] = field(default_factory=list)
    doc_etag: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def compute_seconds(self) -> float:
        return sum(self.shard_compute_seconds.values())

    def shard_messages(self, *, only_missing: bool = False) -> list[ShardMessage]:
        """The messages for this job's shards (from its plan, or the single whole-file shard)."""
        done = set(self.shards_done) if only_missing else set()
        return [self.shard_message(i) for i in range(max(1, len(self.shard_plan))) if i not in done]

    def shard_message(self, index: int) -> ShardMessage:
        if not self.shard_plan:
            return ShardMessage(
                self.tenant_id, self.job_id, 0, 1, 0, self.content_length or None, 0, traceparent=self.traceparent
            )
        start, end, first_index, first_line = self.shard_plan[index]
        return ShardMessage(
            self.tenant_id,
            self.job_id,
            index,
            len(self.shard_plan),
            start,
            end,
            first_index,
            first_line,
            traceparent=self.traceparent,
        )

    @property
    def in_flight(self) -> list[int]:
        """Shards handed to the queue and not recorded yet: running, waiting in the queue, or lost."""
        done = set(self.shards_done) | set(self.shards_skipped)
        return [i for i in range(min(self.dispatched, self.shard_count)) if i not in done]

    @property
    def waiting(self) -> int:
        """Shards of the backlog not handed to the queue yet (0 while the job is being planned)."""
        return max(0, self.shard_count - self.dispatched)

    @property
    def schedulable(self) -> bool:
        """A job the dispatcher must see: not ended, planned, and with shards waiting or in flight."""
        if self.terminal or self.cancel_requested_at:  # a cancelled job's shards are handed out no more
            return False
        return self.shard_count > 0 and (self.waiting > 0 or bool(self.in_flight))

    @property
    def cancel_settled(self) -> bool:
        """A cancel asked for and no shard of the job in flight any more: it can end cancelled."""
        return bool(self.cancel_requested_at) and not self.terminal and not self.in_flight

    @property
    def all_shards_done(self) -> bool:
        """Every planned shard recorded (a job still being planned has shard_count 0)."""
        return self.shard_count > 0 and not self.planning and len(set(self.shards_done)) >= self.shard_count

    def decide_outcome(self) -> JobStatus:
        """The terminal status from the counts: every record failed (or none at all) is a failed job."""
        if self.cancel_requested_at:  # the tenant's stop wins over what the shards that ran found
            ran = len(set(self.shards_done))
            self.error = {
                "code": "Cancelled",
                "message": f"cancelled at {self.cancel_requested_at}: {ran} of {self.shard_count} shards ran, "
                f"{self.counts.records} records were processed; their results stay readable",
            }
            return JobStatus.CANCELLED
        if self.error is not None:
            return JobStatus.FAILED
        if self.counts.records == 0:
            self.error = {"code": "EmptyInput", "message": "the file holds no records"}
            return JobStatus.FAILED
        if self.counts.failed == 0:
            return JobStatus.SUCCEEDED
        if self.counts.succeeded == 0:
            self.error = {
                "code": "AllRecordsFailed",
                "message": f"all {self.counts.records} records failed{self._first_error()}; see errors.jsonl",
            }
            return JobStatus.FAILED
        if 0 <= self.error_threshold < self.counts.failed:
            self.error = {
                "code": "ErrorThresholdExceeded",
                "message": f"{self.counts.failed} of {self.counts.records} records failed, more than the job's "
                f"error threshold of {self.error_threshold}; see errors.jsonl",
            }
            return JobStatus.FAILED
        self.error = {
            "code": "SomeRecordsFailed",
            "message": f"{self.counts.failed} of {self.counts.records} records failed{self._first_error()}; "
            "see errors.jsonl",
        }
        return JobStatus.PARTIALLY_SUCCEEDED

    def _first_error(self) -> str:
        return f" (the first: {self.counts.first_error})" if self.counts.first_error else ""

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "tenantId": self.tenant_id,
            "jobId": self.job_id,
            "status": self.status.value,
            "model": {"name": self.model_name, "version": self.model_version},
            "input": {
                "blobPath": self.blob_path,
                "etag": self.etag,
                "fileType": self.file_type,
                "contentLength": self.content_length,
            },
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "completedAt": self.completed_at,
            "shards": {
                "count": self.shard_count,
                "done": sorted(set(self.shards_done)),
                "plan": self.shard_plan,
                "bytes": self.shard_bytes,
                "dispatched": self.dispatched,
                "planning": self.planning,
                # For the dispatcher's one query: an indexed equality filter, and the counts it projects.
                "active": self.schedulable,
                "doneCount": len(set(self.shards_done)),
                "computeSeconds": {str(index): s for index, s in sorted(self.shard_compute_seconds.items())},
                "sketches": {str(index): doc for index, doc in sorted(self.shard_sketches.items())},
                "skipped": sorted(set(self.shards_skipped)),
            },
            "drift": self.drift,
            "counts": self.counts.to_dict(),
            "firstRecordError": self.counts.first_error,
            "error": self.error,
            "outputs": self.outputs,
            "event": {"id": self.event_id, "published": self.event_published},
            "parameters": self.parameters,
            "errorThreshold": self.error_threshold,
            "sweeps": self.sweeps,
            "idleSweeps": self.idle_sweeps,
            "traceparent": self.traceparent,
            "region": self.region,
            "rollout": self.rollout,
            "comparisons": {str(index): c for index, c in sorted(self.shard_comparisons.items())},
            "metadata": self.metadata,
            "cancelRequestedAt": self.cancel_requested_at,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Job:
        model = doc.get("model") or {}
        inp = doc.get("input") or {}
        shards = doc.get("shards") or {}
        event = doc.get("event") or {}
        return cls(
            tenant_id=doc["tenantId"],
            job_id=doc["jobId"],
            model_name=model.get("name", ""),
            model_version=model.get("version"),
            blob_path=inp.get("blobPath", ""),
            etag=inp.get("etag", ""),
            status=JobStatus(doc.get("status", "queued")),
            file_type=inp.get("fileType", ""),
            content_length=int(inp.get("contentLength") or 0),
            created_at=doc.get("createdAt", ""),
            updated_at=doc.get("updatedAt", ""),
            completed_at=doc.get("completedAt"),
            shard_count=int(shards.get("count", 1)),
            shard_bytes=int(shards.get("bytes") or 0),
            shards_done=list(shards.get("done", [])),
            shard_compute_seconds={int(k): float(v) for k, v in (shards.get("computeSeconds") or {}).items()},
            shard_sketches={int(k): dict(v) for k, v in (shards.get("sketches") or {}).items()},
            drift=doc.get("drift"),
            # Jobs written before the dispatcher had every shard enqueued up front.
            dispatched=int(shards.get("dispatched", shards.get("count", 1))),
            shard_plan=[list(cut) for cut in shards.get("plan", [])],
            planning=bool(shards.get("planning", False)),
            counts=Counts.from_dict(doc.get("counts"), doc.get("firstRecordError")),
            error=doc.get("error"),
            outputs=dict(doc.get("outputs") or {}),
            event_id=event.get("id"),
            event_published=bool(event.get("published")),
            parameters=dict(doc.get("parameters") or {}),
            error_threshold=int(doc.get("errorThreshold", -1)),
            sweeps=int(doc.get("sweeps", 0)),
            idle_sweeps=int(doc.get("idleSweeps", doc.get("sweeps", 0))),
            region=str(doc.get("region") or ""),
            traceparent=traceparent_of(doc.get("traceparent")),
            rollout=doc.get("rollout"),
            shard_comparisons={int(k): dict(v) for k, v in (doc.get("comparisons") or {}).items()},
            metadata={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
            cancel_requested_at=doc.get("cancelRequestedAt"),
            shards_skipped=[int(i) for i in shards.get("skipped", [])],
            doc_etag=doc.get("_etag"),
        )

    def public_view(self, api_url: str) -> dict[str, Any]:
        """The job as the HTTP API shows it to its tenant."""
        view = {
            "jobId": self.job_id,
            "status": self.status.value,
            "model": {"name": self.model_name, "version": self.model_version},
            "input": {"blobPath": self.blob_path, "etag": self.etag},
            "counts": self.counts.to_dict(),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "completedAt": self.completed_at,
            "links": self.links(api_url),
            "errorThreshold": self.error_threshold,
            "shards": {"count": self.shard_count, "done": len(set(self.shards_done))},
            "metadata": self.metadata,
        }
        if self.cancel_requested_at:
            view["cancelRequestedAt"] = self.cancel_requested_at
        if self.region:
            view["region"] = self.region
        if self.parameters:
            view["parameters"] = self.parameters
        if self.rollout:
            view["rollout"] = {k: v for k, v in self.rollout.items() if k != "rolloutId"}
        if self.error:
            view["error"] = self.error
        if self.drift:
            view["drift"] = self.drift
        return view

    def links(self, api_url: str) -> dict[str, str | None]:
        base = f"{api_url.rstrip('/')}/v1/jobs/{self.job_id}"
        return {"job": base, "results": f"{base}/results", "outputBlob": self.outputs.get("results")}


def json_lines(entries: list[dict[str, Any]]) -> bytes:
    """Entries as JSON lines: compact JSON, one a line (the output files' format)."""
    return b"".join(orjson.dumps(entry) + b"\n" for entry in entries)


@dataclass
class ResultPage:
    """One batch of results of a job, records [first_record_index, last_record_index]: its items and errors.

    A store keeps it in as many documents as its item size limit asks for (Cosmos DB: 2 MB each).
    """

    tenant_id: str
    job_id: str
    shard_index: int
    first_record_index: int
    last_record_index: int
    items: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    # The entries as the output files hold them (json_lines), when the writer encoded them already: a store
    # sizes and keeps its documents by these instead of encoding every entry again.
    encoded_items: bytes | None = field(default=None, repr=False, compare=False)
    encoded_errors: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def doc_id(self) -> str:
        return f"{self.job_id}:{self.first_record_index:012d}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.doc_id,
            "tenantId": self.tenant_id,
            "jobId": self.job_id,
            "shardIndex": self.shard_index,
            "firstRecordIndex": self.first_record_index,
            "lastRecordIndex": self.last_record_index,
            "items": self.items,
            "errors": self.errors,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ResultPage:
        return cls(
            tenant_id=doc["tenantId"],
            job_id=doc["jobId"],
            shard_index=int(doc.get("shardIndex", 0)),
            first_record_index=int(doc["firstRecordIndex"]),
            last_record_index=int(doc["lastRecordIndex"]),
            items=list(doc.get("items", [])),
            errors=list(doc.get("errors", [])),
        )
