"""Typed views of the platform's answers (pydantic v2): snake_case attributes, the API's camelCase on the wire."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from aiaas_client._async_client import AsyncClient
    from aiaas_client._client import Client


class ApiModel(BaseModel):
    """Every answer: fields by their API name or their Python name; fields the platform adds later are kept
    (`model_extra`), so an older SDK still reads a newer platform."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_api(self) -> dict[str, Any]:
        """The object as the API wrote it (camelCase), e.g. for `--json` output."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    # Reads by key, for code written when the nested parts (job.drift, event.data, ...) were plain dicts:
    # `job.drift["status"]`, `event.data.get("jobId")` still work; a part typed since reads as its model.
    def __getitem__(self, key: str) -> Any:
        for name, info in type(self).model_fields.items():
            if key in (name, info.alias):
                return getattr(self, name)
        if self.model_extra and key in self.model_extra:
            return self.model_extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        """The answer carried `key` (an API or attribute name), as `key in a_dict` said."""
        if not isinstance(key, str):
            return False
        sent = set(self.model_fields_set) | {type(self).model_fields[n].alias for n in self.model_fields_set}
        return key in sent or bool(self.model_extra and key in self.model_extra)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.PARTIALLY_SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED, JobStatus.CANCELLED}
)


class Error(ApiModel):
    """`{"code", "message"}`: the body of every 4xx/5xx answer (under "error"), and a job's reason it failed."""

    code: str
    message: str = ""


class ModelRef(ApiModel):
    name: str
    version: str | None = None


class Counts(ApiModel):
    records: int = 0
    succeeded: int = 0
    failed: int = 0


class JobInput(ApiModel):
    blob_path: str
    etag: str | None = None


class JobLinks(ApiModel):
    job: str | None = None
    results: str | None = None
    output_blob: str | None = None


class Shards(ApiModel):
    count: int = 0
    done: int = 0


class JobRollout(ApiModel):
    """Which arm of its alias's rollout ran the job."""

    alias: str
    arm: str = Field(description="canary or stable")
    stable_version: str
    canary_version: str | None = None
    shadow_version: str | None = None
    compare_with: str | None = Field(
        default=None, description="the other version that also scored the job's first records of each shard"
    )


class DriftColumn(ApiModel):
    """One column's drift verdict (a feature, or the prediction); embeddings add their own figures (`model_extra`)."""

    name: str
    metric: str = Field(description="ks, wasserstein, chi-square, jensen-shannon or an embedding distance")
    value: float | None = Field(default=None, description="the p-value (tests) or the distance; None: no rows")
    threshold: float
    drifted: bool
    rows: int | None = None
    statistic: float | None = None


class DriftSection(ApiModel):
    """A job's drift against its model's reference profile."""

    status: str = Field(description="ok or drifted (at least half of the columns drifted)")
    features: list[DriftColumn] = Field(default_factory=list)
    prediction: DriftColumn | None = None
    rows: int = 0
    share: float = Field(default=0.0, description="the share of columns (features and prediction) that drifted")
    drifted_columns: int | None = None
    columns: int | None = None
    profile_id: str | None = None


class Job(ApiModel):
    job_id: str
    status: str = Field(description="one of JobStatus; a string so that a status added later still reads")
    model: ModelRef
    input: JobInput
    counts: Counts = Field(default_factory=Counts)
    created_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None
    links: JobLinks = Field(default_factory=JobLinks)
    error_threshold: int | None = None
    shards: Shards = Field(default_factory=Shards)
    region: str | None = None
    parameters: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    cancel_requested_at: str | None = None
    rollout: JobRollout | None = None
    error: Error | None = None
    drift: DriftSection | None = None

    _client: Client | None = PrivateAttr(default=None)
    _async_client: AsyncClient | None = PrivateAttr(default=None)

    @property
    def done(self) -> bool:
        """The job ended (whichever way): its counts and outputs no longer change."""
        return self.status in TERMINAL_STATUSES

    def results(self, *, limit: int | None = None) -> Iterator[Result]:
        """Every result of the job, page after page (`limit`: the page size), a Job read through a Client."""
        if self._client is None:
            raise RuntimeError("this Job was not read through a Client: use client.jobs.results(job_id)")
        return self._client.jobs.results(self.job_id, limit=limit)

    def aresults(self, *, limit: int | None = None) -> AsyncIterator[Result]:
        """Every result of the job, page after page (`limit`: the page size), a Job read through an AsyncClient."""
        if self._async_client is None:
            raise RuntimeError("this Job was not read through an AsyncClient: use client.jobs.results(job_id)")
        return self._async_client.jobs.results(self.job_id, limit=limit)

    def errors(self, *, limit: int | None = None) -> Iterator[RecordError]:
        """Every record of the job that failed, in record order, page after page (`limit`: the page size)."""
        if self._client is None:
            raise RuntimeError("this Job was not read through a Client: use client.jobs.errors(job_id)")
        return self._client.jobs.errors(self.job_id, limit=limit)

    def aerrors(self, *, limit: int | None = None) -> AsyncIterator[RecordError]:
        """Every record of the job that failed, in record order, page after page (`limit`: the page size)."""
        if self._async_client is None:
            raise RuntimeError("this Job was not read through an AsyncClient: use client.jobs.errors(job_id)")
        return self._async_client.jobs.errors(self.job_id, limit=limit)


class Result(ApiModel):
    record_index: int
    id: str | None = None
    output: dict[str, Any] = Field(default_factory=dict, description="the model's output (its own fields)")
    region: str | None = None


class RecordError(ApiModel):
    """A record the model did not score: a line of outbox/<jobId>/errors.jsonl (docs/errors.md lists the codes)."""

    record_index: int = Field(description="0-based position of the record in the input")
    line: int = Field(description="1-based line of the record in the input file")
    id: str | None = Field(default=None, description="the record's own id, when it had one")
    field: str | None = Field(default=None, description="the field at fault, when one was")
    code: str
    message: str = Field(description="what is wrong with the record, for a person")
    region: str | None = None


class Upload(ApiModel):
    upload_url: str
    blob_path: str
    expires_at: str | None = None
    headers: dict[str, str] | None = None


class Artifact(ApiModel):
    """A file of a model package, with its digest."""

    file: str
    sha256: str
    bytes: int | None = None


class ModelCard(ApiModel):
    """A model version's card: the fields the platform reads; whatever else the package's card says is kept
    (`card.model_extra`, or `card["key"]`)."""

    name: str
    version: str
    task: str | None = None
    handler: str | None = None
    description: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    input_types: list[str] | None = None
    input_schema: dict[str, Any] | None = Field(default=None, description="a JSON Schema of one record")
    output_schema: dict[str, Any] | None = Field(default=None, description="a JSON Schema of one output")
    metrics: dict[str, Any] | None = Field(default=None, description="the package's own evaluation figures")
    tags: dict[str, str] | None = None
    features: list[str] | None = Field(default=None, description="a tabular model's input fields, in order")
    labels: list[str] | None = Field(default=None, description="a classifier's labels")
    created_at: str | None = None
    license: dict[str, str] | None = Field(default=None, description="licence of each part (weights, data)")
    artifact: Artifact | None = None
    files: list[Artifact] | None = Field(default=None, description="files beside the model (e.g. drift profile)")


class Model(ApiModel):
    name: str
    task: str | None = None
    visibility: str | None = None
    versions: list[str] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    default_version: str | None = None
    input_types: list[str] = Field(default_factory=list)
    card: ModelCard


class RetryPolicy(ApiModel):
    max_delivery_attempts: int | None = None
    event_time_to_live_in_minutes: int | None = None


class Subscription(ApiModel):
    subscription_id: str
    kind: str | None = None
    endpoint_url: str | None = None
    callback_url: str | None = None
    # `schema` would shadow BaseModel.schema(): the attribute is `event_schema`, the API's name "schema".
    event_schema: str | None = Field(
        default=None, alias="schema", validation_alias=AliasChoices("schema", "event_schema")
    )
    event_types: list[str] = Field(default_factory=list)
    model_names: list[str] | None = None
    retry_policy: RetryPolicy | None = None
    has_secret: bool | None = None
    created_at: str | None = None
    location: str | None = Field(default=None, exclude=True, description="the Location header of its creation")


class EventModelRef(ModelRef):
    """The model of an event: its name, and for job and drift events the version that ran."""


class GateVerdict(ApiModel):
    """One gate of a canary rollout: the canary's figure it reads against its threshold."""

    name: str = Field(description="maxErrorRate, maxSecondsPerRecord, maxDriftShare, noDrift or minAgreement")
    threshold: bool | float
    value: int | float | None = Field(default=None, description="None: not measured yet")
    status: str = Field(description="pending, passed or failed")


class Progress(ApiModel):
    needed: int = 0
    observed: int = 0


class EvidenceProgress(ApiModel):
    jobs: Progress = Field(default_factory=Progress)
    records: Progress = Field(default_factory=Progress)


class ArmFigures(ApiModel):
    """One arm's evidence so far, with the rates the gates read (None: no data for that rate yet)."""

    jobs: int = 0
    records: int = 0
    failed: int = 0
    error_rate: float | None = None
    seconds_per_record: float | None = None
    drifted_jobs: int = 0
    drift_share: float | None = None
    compared: int = Field(default=0, description="records also scored by the other version")
    agreement: float | None = None


class RolloutFigures(ApiModel):
    canary: ArmFigures = Field(default_factory=ArmFigures)
    stable: ArmFigures = Field(default_factory=ArmFigures)


class EventData(ApiModel):
    """An event's payload. Which fields each type carries:
    AIaaS.Job.* (Succeeded, PartiallySucceeded, Failed, Rejected, Cancelled): job_id, tenant_id, status, model,
    input, counts, links, created_at, completed_at, metadata, region, error (unless it succeeded);
    AIaaS.Model.DriftDetected: job_id, tenant_id, model, completed_at, drift, metadata;
    AIaaS.Model.Promoted and AIaaS.Model.RolledBack: tenant_id, model (name), decision, alias, from_, to,
    canary_version, gates, evidence, figures, decided_by (a private model's).
    Every field may be absent: an event type added later still reads."""

    job_id: str | None = None
    tenant_id: str | None = None
    status: str | None = None
    model: EventModelRef | None = None
    input: JobInput | None = None
    counts: Counts | None = None
    links: JobLinks | None = None
    created_at: str | None = None
    completed_at: str | None = None
    metadata: dict[str, str] | None = None
    region: str | None = None
    error: Error | None = None
    drift: DriftSection | None = None
    decision: str | None = Field(default=None, description="promoted or rolledBack")
    alias: str | None = None
    from_: str | None = Field(
        default=None, alias="from", validation_alias=AliasChoices("from", "from_"), description="the stable version"
    )
    to: str | None = Field(default=None, description="the version the alias now names")
    canary_version: str | None = None
    gates: list[GateVerdict] | None = None
    evidence: EvidenceProgress | None = None
    figures: RolloutFigures | None = None
    decided_by: str | None = None


class Event(ApiModel):
    """An event in Event Grid's schema, as the event log lists it."""

    id: str
    event_type: str
    subject: str | None = None
    event_time: str | None = None
    topic: str | None = None
    data: EventData = Field(default_factory=EventData)
    data_version: str | None = None
    metadata_version: str | None = None


class DeadLetter(ApiModel):
    event: Event
    dead_letter_reason: str
    delivery_attempts: int
    last_delivery_outcome: str | None = None
    last_http_status_code: int | None = None
    last_delivery_attempt_time: str | None = None


class Redelivery(ApiModel):
    subscription_id: str
    events: int
    not_found: list[str] = Field(default_factory=list)


class UsageTotals(ApiModel):
    jobs: int = 0
    records: int = 0
    succeeded: int = 0
    failed: int = 0
    bytes: int = 0
    compute_seconds: float = 0.0


class UsageRow(UsageTotals):
    """One group of the usage: a model (name@version) or a day (YYYY-MM-DD), as asked."""

    model: str | None = None
    day: str | None = None


class QuotaFigure(ApiModel):
    """A limit (None: none), what of it is used and what is left."""

    limit: int | None = None
    used: int | None = None
    remaining: int | None = None


class Quota(ApiModel):
    records_per_day: QuotaFigure | None = None
    concurrent_jobs: QuotaFigure | None = None
    max_file_bytes: QuotaFigure | None = None
    requests_per_minute: QuotaFigure | None = None


class Usage(ApiModel):
    from_: str | None = Field(default=None, alias="from", validation_alias=AliasChoices("from", "from_"))
    to: str | None = None
    group_by: str | None = None
    items: list[UsageRow] = Field(default_factory=list)
    totals: UsageTotals = Field(default_factory=UsageTotals)
    quota: Quota = Field(default_factory=Quota)


class ApiKey(ApiModel):
    id: str
    name: str
    role: str
    created_at: str | None = None
    key: str | None = Field(default=None, description="the secret: only in the answer that created it")
