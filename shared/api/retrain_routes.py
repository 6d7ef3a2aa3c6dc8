"""Retraining routes: retrain a private model on labelled data, its retraining policy (on drift?) and its runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from shared.api.auth import AS_ADMIN, AS_READER, Caller
from shared.api.schemas import AUTHED, CanarySetup, ErrorDetail, Gates, Part, errors
from shared.domain.blobpaths import MAX_BLOB_NAME_CHARS
from shared.domain.models import DEFAULT_ALIAS, SELECTOR_PATTERN
from shared.services import retraining
from shared.services.platform import Platform


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blobPath: str = Field(
        min_length=1, max_length=MAX_BLOB_NAME_CHARS, description="labelled records (.jsonl or .csv) in your container"
    )


class EvidencePolicy(Part):
    """What promotes the canary (the rollout's defaults for what is left out)."""

    jobs: int | None = Field(default=None, description="canary jobs, at least 1")
    records: int | None = Field(default=None, description="canary records")


class CanaryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: StrictInt = Field(default=retraining.DEFAULT_CANARY_PERCENT, ge=1, le=99, description="of jobs")
    gates: Gates | None = Field(default=None, description="the rollout's gates, as the alias PUT takes them")
    evidence: EvidencePolicy | None = Field(default=None, description="jobs and records before a promotion")


class RetrainingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    onDrift: StrictBool = Field(default=False, description="retrain on a drifted job's own (labelled) input")
    labelField: str = Field(default=retraining.DEFAULT_LABEL_FIELD, min_length=1, max_length=100)
    alias: str = Field(default=DEFAULT_ALIAS, min_length=1, max_length=64, pattern=SELECTOR_PATTERN.pattern)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)


class TrainingDataView(Part):
    """The labelled data a run trains on: the blob in the tenant's container, as it was when the run was asked."""

    blobPath: str
    etag: str
    bytes: int


class LocalTraining(Part):
    builder: str | None = Field(description="the model's own builder (shared.modelbuild) that retrains it")
    rows: int = Field(description="labelled rows read")


class AzureMLTraining(Part):
    job: str = Field(description="the Azure ML command job's name")
    experiment: str | None = Field(default=None, description="its experiment (while it trains)")


class TrainerView(Part):
    """Where a run trains (shared.ports.Trainer): one of these."""

    local: LocalTraining | None = Field(default=None, description="on the platform's own worker")
    azureml: AzureMLTraining | None = Field(default=None, description="as an Azure ML job")


class LineageData(Part):
    blobPath: str
    etag: str
    sha256: str


class Lineage(Part):
    """A retrained version's lineage, as its card records it."""

    parentVersion: str
    data: LineageData
    metrics: dict[str, Any] = Field(description="the trained version's evaluation figures, named by the trainer")
    trainedAt: str
    trigger: str = Field(description="drift or labelledData")
    runId: str
    jobId: str | None = Field(default=None, description="drift: the drifted job")
    trainer: TrainerView | None = Field(default=None, description="where it trained, when not on the worker")


class RetrainingRollout(Part):
    """The rollout the new version entered: the canary of the policy's alias."""

    alias: str
    id: str | None
    stableVersion: str | None
    canary: CanarySetup | None


class RetrainingRun(BaseModel):
    id: str
    model: str
    status: str = Field(description="queued, running, succeeded or failed")
    trigger: str = Field(description="drift or labelledData")
    data: TrainingDataView
    createdAt: str
    updatedAt: str
    jobId: str | None = None
    parentVersion: str | None = None
    version: str | None = None
    metrics: dict[str, Any] | None = Field(
        default=None, description="the trained version's evaluation figures, named by the trainer (free-form)"
    )
    lineage: Lineage | None = None
    rollout: RetrainingRollout | None = None
    error: ErrorDetail | None = None
    labelField: str | None = None
    trainer: TrainerView | None = Field(default=None, description="where it trains, e.g. its Azure ML job")


class RetrainingView(BaseModel):
    name: str
    policy: RetrainingPolicy
    runs: list[RetrainingRun]


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    """A run as the API shows it: without `by` (who asked is the audit entry's actor; the answer never had it)."""
    return {k: v for k, v in run.items() if k != "by"}


def retrain_router(platform_dep: Any) -> APIRouter:
    """Routes under /api/v1/models/{name}/retrain*; `platform_dep` is the API's Depends() marker of the Platform."""
    router = APIRouter()

    @router.post(
        "/api/v1/models/{name}/retrain",
        status_code=202,
        response_model=RetrainingRun,
        responses=errors(*AUTHED, 404, 409),
    )
    def retrain(name: str, body: RetrainRequest, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN) -> Any:
        """Trains a new version of your private model on labelled records in your container, in the background; it
        is registered with its lineage and enters as the canary of the policy's alias."""
        run = retraining.request_retraining(
            plat,
            tenant.tenant_id,
            name,
            body.blobPath,
            trigger=retraining.LABELLED_DATA,
            by=f"tenant:{tenant.tenant_id}",
        )
        return _run_view(run)

    @router.get("/api/v1/models/{name}/retraining", response_model=RetrainingView, responses=errors(*AUTHED, 404))
    def get_retraining(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> Any:
        """The model's retraining policy and its runs, newest first."""
        view = retraining.get_retraining(plat, tenant.tenant_id, name)
        return {**view, "runs": [_run_view(run) for run in view["runs"]]}

    @router.put("/api/v1/models/{name}/retraining", response_model=RetrainingPolicy, responses=errors(*AUTHED, 404))
    def put_retraining(
        name: str, body: RetrainingPolicy, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN
    ) -> Any:
        """Sets the policy: whether a drifted job retrains the model, the records' label field, and the canary."""
        return retraining.set_policy(plat, tenant.tenant_id, name, body.model_dump(exclude_none=True))

    return router
