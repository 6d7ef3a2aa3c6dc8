"""Retraining routes: retrain a private model on labelled data, its retraining policy (on drift?) and its runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from shared.api.auth import AS_ADMIN, AS_READER, Caller
from shared.api.schemas import AUTHED, errors
from shared.domain.blobpaths import MAX_BLOB_NAME_CHARS
from shared.domain.models import DEFAULT_ALIAS, SELECTOR_PATTERN
from shared.services import retraining
from shared.services.platform import Platform


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blobPath: str = Field(
        min_length=1, max_length=MAX_BLOB_NAME_CHARS, description="labelled records (.jsonl or .csv) in your container"
    )


class CanaryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: StrictInt = Field(default=retraining.DEFAULT_CANARY_PERCENT, ge=1, le=99, description="of jobs")
    gates: dict[str, Any] | None = Field(
        default=None, description="the rollout's gates, as the alias PUT takes them (maxErrorRate, noDrift, ...)"
    )
    evidence: dict[str, int] | None = Field(default=None, description="jobs and records before a promotion")


class RetrainingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    onDrift: StrictBool = Field(default=False, description="retrain on a drifted job's own (labelled) input")
    labelField: str = Field(default=retraining.DEFAULT_LABEL_FIELD, min_length=1, max_length=100)
    alias: str = Field(default=DEFAULT_ALIAS, min_length=1, max_length=64, pattern=SELECTOR_PATTERN.pattern)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)


class RetrainingRun(BaseModel):
    id: str
    model: str
    status: str = Field(description="queued, running, succeeded or failed")
    trigger: str = Field(description="drift or labelledData")
    data: dict[str, Any]
    createdAt: str
    updatedAt: str
    jobId: str | None = None
    parentVersion: str | None = None
    version: str | None = None
    metrics: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None
    rollout: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    labelField: str | None = None
    trainer: dict[str, Any] | None = Field(default=None, description="where it trains, e.g. its Azure ML job")


class RetrainingView(BaseModel):
    name: str
    policy: RetrainingPolicy
    runs: list[RetrainingRun]


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
        return retraining.request_retraining(
            plat,
            tenant.tenant_id,
            name,
            body.blobPath,
            trigger=retraining.LABELLED_DATA,
            by=f"tenant:{tenant.tenant_id}",
        )

    @router.get("/api/v1/models/{name}/retraining", response_model=RetrainingView, responses=errors(*AUTHED, 404))
    def get_retraining(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> Any:
        """The model's retraining policy and its runs, newest first."""
        return retraining.get_retraining(plat, tenant.tenant_id, name)

    @router.put("/api/v1/models/{name}/retraining", response_model=RetrainingPolicy, responses=errors(*AUTHED, 404))
    def put_retraining(
        name: str, body: RetrainingPolicy, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN
    ) -> Any:
        """Sets the policy: whether a drifted job retrains the model, the records' label field, and the canary."""
        return retraining.set_policy(plat, tenant.tenant_id, name, body.model_dump(exclude_none=True))

    return router
