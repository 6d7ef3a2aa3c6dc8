"""The API's answers as pydantic models (what /api/openapi.json describes) and the error responses routes declare."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

# Free-form maps: the only objects in an answer without declared properties (tests/unit/test_openapi.py lists the
# same fields with why). Everything else an answer holds is declared below, and the test checks real answers
# against these models with no undeclared field allowed.


class Answer(BaseModel):
    """An answer's base: a field the handler returns but the model does not declare is kept, never dropped by
    response_model filtering (the schema test then fails on it, so it gets declared)."""

    model_config = ConfigDict(extra="allow")


class Part(Answer):
    """A part of an answer that shows exactly the fields it was given: one the platform did not send stays absent
    (not null), on routes with or without response_model_exclude_unset, so typing a part never changes the wire."""

    # No return annotation: pydantic would take it for the part's serialised schema (a bare object).
    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        shown = handler(self)
        if not isinstance(shown, dict):
            return shown
        fields = type(self).model_fields
        given = {alias for name in self.model_fields_set if name in fields and (alias := fields[name].alias)}
        given |= self.model_fields_set
        return {key: value for key, value in shown.items() if key in given or key in (self.model_extra or {})}


# Errors


class ErrorDetail(BaseModel):
    code: str = Field(description="a stable machine-readable code, e.g. UnknownModel, QuotaExceeded, InvalidRequest")
    message: str = Field(description="what went wrong, for a person")


class ErrorBody(BaseModel):
    """Every /api/v1 error: {"error": {"code", "message"}}."""

    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """An Open Inference Protocol error (/api/v2): {"error": "message"}, as the protocol defines it."""

    error: str


ERROR_DESCRIPTIONS = {
    400: "the request is malformed or breaks a rule (validation errors are 400 too, never 422)",
    401: "no valid credential (WWW-Authenticate: Bearer)",
    403: "the caller's role or tenant state does not allow it",
    404: "no such resource visible to the caller",
    409: "it exists already, or a precondition (ETag, state) failed",
    413: "the request body is too large",
    415: "the Content-Encoding is not supported (gzip, deflate)",
    421: "the tenant lives in another region: send the same request to AIaaS-Home-Api-Url",
    429: "a quota or the request rate is exceeded (Retry-After when known)",
    503: "the database is busy: come back after Retry-After seconds",
}
# What any route behind a credential can answer: a malformed parameter, the credential's refusals, the tenant's
# home region, the request rate and a busy database.
AUTHED = (400, 401, 403, 421, 429, 503)


def errors(*statuses: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status with the error body and what it means."""
    model = V2ErrorBody if v2 else ErrorBody
    return {status: {"model": model, "description": ERROR_DESCRIPTIONS[status]} for status in sorted(set(statuses))}


REF_TEMPLATE = "#/components/schemas/{model}"


def body_of(model: type[BaseModel], *, binary: str | None = None) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its body itself: the body `model` describes (a BODY_MODELS one), and
    when `binary` says how, the same as application/octet-stream."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}}
    if binary:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary", "description": binary}}
    return {"requestBody": {"required": True, "content": content}}


def install_openapi(app: FastAPI) -> None:
    """/api/openapi.json without FastAPI's default 422 (the app answers validation errors with a 400 and the error
    body, so a 422 is never sent) and without the validation-error schemas only that 422 used."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    if isinstance(operation, dict):
                        operation.get("responses", {}).pop("422", None)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            for model in BODY_MODELS:  # bodies a route reads itself (openapi_extra refers to them)
                body = model.model_json_schema(ref_template=REF_TEMPLATE)
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Health


class HealthAnswer(Answer):
    status: str = Field(description="ok")


# Models (catalogue)


class ArtifactView(Answer):
    file: str
    sha256: str
    bytes: int | None = None


class ModelCardView(Answer):
    """A model version's card: the package's own description of itself (CONTRACT "Model packages"); the fields
    below are the ones the platform reads, a package may carry more."""

    name: str
    version: str
    task: str | None = None
    handler: str | None = None
    description: str | None = None
    intendedUse: str | None = None
    limitations: str | None = None
    inputTypes: list[str] | None = None
    inputSchema: dict[str, Any] | None = Field(default=None, description="a JSON Schema of one record (free-form)")
    outputSchema: dict[str, Any] | None = Field(default=None, description="a JSON Schema of one output (free-form)")
    metrics: dict[str, Any] | None = Field(default=None, description="the package's own evaluation figures")
    tags: dict[str, str] | None = None
    features: list[str] | None = Field(default=None, description="a tabular model's input fields, in order")
    labels: list[str] | None = Field(default=None, description="a classifier's labels")
    createdAt: str | None = None
    license: dict[str, str] | None = Field(default=None, description="licence of each part (weights, data)")
    artifact: ArtifactView | None = None
    files: list[ArtifactView] | None = Field(default=None, description="files beside the model (e.g. drift profile)")


class ModelView(Answer):
    name: str
    task: str
    visibility: str = Field(description="public (the platform's catalogue) or private (the caller's own)")
    versions: list[str]
    aliases: dict[str, str] = Field(description="alias -> version")
    defaultVersion: str | None
    inputTypes: list[str]
    card: ModelCardView


class ModelList(Answer):
    items: list[ModelView]


class UploadAnswer(Answer):
    uploadUrl: str = Field(description="a write-only SAS URL for the file (PUT it with the headers below)")
    blobPath: str
    expiresAt: str
    headers: dict[str, str] = Field(description="headers the PUT must carry")


# Jobs


class JobModel(Answer):
    name: str
    # None when the job was rejected before a version was chosen (an unknown model, a quota).
    version: str | None


class JobInput(Answer):
    blobPath: str
    etag: str | None


class JobCounts(Answer):
    records: int
    succeeded: int
    failed: int


class JobLinks(Answer):
    job: str
    results: str
    outputBlob: str | None = Field(description="the results file in the tenant's container, once written")


class JobShards(Answer):
    count: int
    done: int


class DriftColumn(Part):
    """One column's verdict (a feature, or the prediction); embeddings add their shift and spread figures."""

    name: str
    metric: str = Field(description="ks, wasserstein, chi-square, jensen-shannon or an embedding distance")
    value: float | None = Field(description="the p-value (tests) or the distance; null: no rows to judge")
    threshold: float
    drifted: bool
    rows: int | None = None
    statistic: float | None = None


class DriftSection(Part):
    """A job's drift against its model's reference profile (contract "Drift and rollouts")."""

    status: str = Field(description="ok or drifted (drifted: at least half of the columns drifted)")
    features: list[DriftColumn]
    prediction: DriftColumn | None
    rows: int
    share: float = Field(description="the share of columns (features and prediction) that drifted")
    driftedColumns: int | None = None
    columns: int | None = None
    profileId: str | None = None


class JobRollout(Part):
    """Which arm of its alias's rollout ran the job (shared.services.rollouts.assign)."""

    alias: str
    arm: str = Field(description="canary or stable")
    stableVersion: str
    canaryVersion: str | None = Field(default=None, description="when the rollout has a canary")
    shadowVersion: str | None = Field(default=None, description="when the rollout has a shadow")
    compareWith: str | None = Field(
        default=None, description="the other version that also scored the job's first records of each shard"
    )


class JobView(Answer):
    jobId: str
    status: str = Field(description="queued, running, succeeded, partially_succeeded, failed, rejected, cancelled")
    model: JobModel
    input: JobInput
    counts: JobCounts
    createdAt: str
    updatedAt: str
    completedAt: str | None
    links: JobLinks
    errorThreshold: int | None
    shards: JobShards
    region: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="the model's parameters as sent (free-form)")
    metadata: dict[str, str] | None = Field(default=None, description="the caller's key-values, echoed")
    cancelRequestedAt: str | None = Field(default=None, description="when a cancel was asked, while shards stop")
    rollout: JobRollout | None = Field(default=None, description="which rollout arm ran the job")
    error: ErrorDetail | None = None
    drift: DriftSection | None = None


class JobList(Answer):
    items: list[JobView]
    continuationToken: str | None


class ResultItem(Answer):
    recordIndex: int
    id: str | None = Field(default=None, description="the record's own id, when it had one")
    output: dict[str, Any] = Field(description="the model's output for the record (free-form: per model)")
    region: str | None = None


class ResultPage(Answer):
    jobId: str
    status: str
    items: list[ResultItem]
    continuationToken: str | None
    region: str | None = None


class RecordError(Answer):
    """A record the model did not score: the same object as a line of outbox/<jobId>/errors.jsonl."""

    recordIndex: int = Field(description="0-based position of the record in the input")
    line: int = Field(description="1-based line of the record in the input file")
    id: str | None = Field(default=None, description="the record's own id, when it had one")
    field: str | None = Field(default=None, description="the field at fault, when one was")
    code: str = Field(description="InvalidRecord, or a model's own code (docs/errors.md)")
    message: str = Field(description="what is wrong with the record, for a person")
    region: str | None = None


class RecordErrorPage(Answer):
    jobId: str
    status: str
    items: list[RecordError]
    continuationToken: str | None
    region: str | None = None


# Rollouts (shared.services.rollouts: what aliases.json holds and evaluate() returns)


class Gates(Part):
    """A canary's gates: thresholds it must keep; a gate crossed rolls it back at once. An absent gate is not
    checked."""

    maxErrorRate: float | None = Field(default=None, description="failed records / records, at most (0-1)")
    maxSecondsPerRecord: float | None = Field(default=None, description="model seconds per record, at most")
    maxDriftShare: float | None = Field(default=None, description="drifted jobs / jobs with a drift verdict (0-1)")
    noDrift: bool | None = Field(default=None, description="true: any drifted canary job rolls back")
    minAgreement: float | None = Field(
        default=None, description="label agreement (cosine for embeddings) with the stable version, at least (0-1)"
    )


class EvidenceNeeded(Part):
    """What promotes a canary once every gate has passed: this many canary jobs and records."""

    jobs: int
    records: int


class CanarySetup(Part):
    version: str
    percent: int = Field(description="share of the alias's jobs that run the canary (1-99), by job id")
    gates: Gates
    evidence: EvidenceNeeded


class ArmFigures(Part):
    """One arm's evidence so far, with the rates the gates read (null: no data for that rate yet)."""

    jobs: int
    records: int
    failed: int
    errorRate: float | None
    secondsPerRecord: float | None
    driftedJobs: int
    driftShare: float | None
    compared: int = Field(description="records also scored by the other version")
    agreement: float | None


class ShadowSetup(Part):
    version: str
    figures: ArmFigures | None = Field(
        default=None, description="how the shadow agreed with the stable version so far (a rollout in progress)"
    )


class GateVerdict(Part):
    name: str = Field(description="maxErrorRate, maxSecondsPerRecord, maxDriftShare, noDrift or minAgreement")
    threshold: bool | float
    value: int | float | None = Field(description="the canary's figure the gate reads; null: not measured yet")
    status: str = Field(description="pending, passed or failed")


class Progress(Part):
    needed: int
    observed: int


class EvidenceProgress(Part):
    jobs: Progress
    records: Progress


class RolloutFigures(Part):
    canary: ArmFigures
    stable: ArmFigures


class RolloutVerdict(Part):
    """The verdict on a canary so far: a decision once a gate failed or the evidence is in with every gate
    passed."""

    decision: str | None = Field(description="promote, rollback, or null: not decided yet")
    gates: list[GateVerdict]
    evidence: EvidenceProgress
    figures: RolloutFigures


class RolloutView(Part):
    """An alias's rollout in progress: its set-up, the evidence so far and the gates' verdicts."""

    id: str
    stableVersion: str
    canary: CanarySetup | None = None
    shadow: ShadowSetup | None = None
    startedAt: str
    startedBy: str
    status: RolloutVerdict | None = Field(default=None, description="with a canary: the verdict so far")


# Aliases


class AliasMove(Answer):
    alias: str
    to: str | None
    by: str
    at: str
    from_: str | None = Field(default=None, alias="from")
    rollout: str | None = Field(
        default=None, description="what the move did to the alias's rollout: started, cancelled, promoted, rolledBack"
    )
    canary: CanarySetup | None = Field(default=None, description="started: the canary it set up")
    shadow: ShadowSetup | None = Field(default=None, description="started: the shadow it set up")
    canaryVersion: str | None = Field(default=None, description="promoted or rolledBack: the canary decided on")
    gates: list[GateVerdict] | None = Field(default=None, description="promoted or rolledBack: the gates' verdicts")
    evidence: EvidenceProgress | None = Field(default=None, description="promoted or rolledBack: the evidence")
    figures: RolloutFigures | None = Field(default=None, description="promoted or rolledBack: both arms' figures")
    decidedBy: str | None = Field(default=None, description="a private model's: the job that tipped the decision")


class AliasesView(Answer):
    name: str
    aliases: dict[str, str] = Field(description="alias -> version")
    history: list[AliasMove]
    rollouts: dict[str, RolloutView] = Field(description="alias -> its rollout in progress")


# Events


class EventModel(Part):
    name: str
    version: str | None = Field(default=None, description="job and drift events: the version that ran")


class EventData(Part):
    """An event's payload (shared.domain.events). Which fields each type carries:
    AIaaS.Job.* (Succeeded, PartiallySucceeded, Failed, Rejected, Cancelled): jobId, tenantId, status, model,
    input, counts, links, createdAt, completedAt, metadata, region (a regional stamp's), error (unless it succeeded);
    AIaaS.Model.DriftDetected: jobId, tenantId, model, completedAt, drift, metadata;
    AIaaS.Model.Promoted and AIaaS.Model.RolledBack: tenantId, model (name), decision, alias, from, to,
    canaryVersion, gates, evidence, figures, decidedBy (a private model's)."""

    jobId: str | None = Field(default=None, description="job and drift events")
    tenantId: str
    status: str | None = Field(default=None, description="job events: the job's status")
    model: EventModel
    input: JobInput | None = Field(default=None, description="job events")
    counts: JobCounts | None = Field(default=None, description="job events")
    links: JobLinks | None = Field(default=None, description="job events")
    createdAt: str | None = Field(default=None, description="job events")
    completedAt: str | None = Field(default=None, description="job and drift events")
    metadata: dict[str, str] | None = Field(default=None, description="job and drift events: the job's metadata")
    region: str | None = Field(default=None, description="job events: the stamp that ran the job")
    error: ErrorDetail | None = Field(default=None, description="job events, unless the job succeeded")
    drift: DriftSection | None = Field(default=None, description="DriftDetected: the job's drift section")
    decision: str | None = Field(default=None, description="Promoted, RolledBack: promoted or rolledBack")
    alias: str | None = Field(default=None, description="Promoted, RolledBack: the alias of the rollout")
    from_: str | None = Field(default=None, alias="from", description="Promoted, RolledBack: the stable version")
    to: str | None = Field(default=None, description="Promoted, RolledBack: the version the alias now names")
    canaryVersion: str | None = Field(default=None, description="Promoted, RolledBack")
    gates: list[GateVerdict] | None = Field(default=None, description="Promoted, RolledBack: the gates' verdicts")
    evidence: EvidenceProgress | None = Field(default=None, description="Promoted, RolledBack")
    figures: RolloutFigures | None = Field(default=None, description="Promoted, RolledBack: both arms' figures")
    decidedBy: str | None = Field(default=None, description="Promoted, RolledBack of a private model: the job")


class EventGridEvent(Answer):
    """A platform event in the Event Grid schema, as published to the tenant's topic."""

    id: str
    topic: str | None = None
    subject: str
    eventType: str = Field(description="e.g. AIaaS.Job.Succeeded")
    eventTime: str
    data: EventData = Field(description='the event\'s payload: its fields per event type (CONTRACT "Events")')
    dataVersion: str
    metadataVersion: str | None = None


# Usage


class UsageRow(Answer):
    model: str | None = Field(default=None, description="name@version, when grouped by model")
    day: str | None = Field(default=None, description="YYYY-MM-DD, when grouped by day")
    jobs: int
    records: int
    succeeded: int
    failed: int
    bytes: int
    computeSeconds: float


class UsageTotals(Answer):
    jobs: int
    records: int
    succeeded: int
    failed: int
    bytes: int
    computeSeconds: float


class QuotaStatus(Answer):
    limit: int | None
    used: int | None = None
    remaining: int | None = None


class UsageQuota(Answer):
    recordsPerDay: QuotaStatus
    concurrentJobs: QuotaStatus
    maxFileBytes: QuotaStatus
    requestsPerMinute: QuotaStatus


class UsageReport(Answer):
    from_: str = Field(alias="from")
    to: str
    groupBy: str
    items: list[UsageRow]
    totals: UsageTotals
    quota: UsageQuota


# Open Inference Protocol (/api/v2)


class ServerMetadata(Answer):
    name: str
    version: str
    extensions: list[str]


class ServerLive(Answer):
    live: bool


class ServerReady(Answer):
    ready: bool


class TensorMetadata(Answer):
    name: str
    datatype: str
    shape: list[int]


class OipModelMetadata(Answer):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OipModelReady(Answer):
    name: str
    version: str
    ready: bool


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES")
    parameters: dict[str, Any] | None = Field(default=None, description="e.g. binary_data_size (free-form)")
    data: list[Any] | None = Field(
        default=None, description="row-major values, flat or nested; absent when sent as binary data"
    )


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(default=None, description="e.g. binary_data (free-form)")


class InferenceRequest(BaseModel):
    """POST .../infer: JSON, or with the binary tensor extension a JSON header of Inference-Header-Content-Length
    bytes followed by the tensors' bytes."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="the model's parameters (free-form)")
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(Answer):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(default=None, description="e.g. binary_data_size (free-form)")
    data: list[Any] | None = None


class InferenceResponse(Answer):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="free-form")
    outputs: list[ResponseOutput]


# Bodies routes read themselves (the binary tensor extension cannot be a pydantic body): described in the OpenAPI.
BODY_MODELS: list[type[BaseModel]] = [InferenceRequest]
