"""Routes of a tenant's keys and audit log (`/api/v1/keys`, `/api/v1/audit`): Admin only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from shared.api.auth import AS_ADMIN, Caller
from shared.api.retrain_routes import TrainerView
from shared.api.schemas import AUTHED, ErrorDetail, EvidenceProgress, GateVerdict, Part, RolloutFigures, errors
from shared.domain.errors import NotFound
from shared.services import audit, tenants
from shared.services.platform import Platform


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    role: Literal["AIaaS.Reader", "AIaaS.Submitter", "AIaaS.Admin"]  # shared.domain.tenants.ROLES


class KeyView(BaseModel):
    id: str
    name: str
    role: str
    createdAt: str


class CreatedKey(KeyView):
    key: str = Field(description="the key itself: shown once, never again")


class KeyList(BaseModel):
    items: list[KeyView]


class AuditActor(BaseModel):
    kind: str
    id: str


class AuditDetails(Part):
    """The figures behind a decision the platform took itself; API calls record none. Per action:
    models.rollout.promote and models.rollout.rollback (shared.services.rollouts): alias, from, to, canaryVersion,
    gates, evidence, figures, decidedBy (a private model's);
    models.retrain (shared.services.retraining): trigger, jobId, parentVersion, version, metrics, error, trainer."""

    alias: str | None = Field(default=None, description="rollout decisions: the alias")
    from_: str | None = Field(default=None, alias="from", description="rollout decisions: the stable version")
    to: str | None = Field(default=None, description="rollout decisions: the version the alias now names")
    canaryVersion: str | None = Field(default=None, description="rollout decisions")
    gates: list[GateVerdict] | None = Field(default=None, description="rollout decisions: the gates' verdicts")
    evidence: EvidenceProgress | None = Field(default=None, description="rollout decisions")
    figures: RolloutFigures | None = Field(default=None, description="rollout decisions: both arms' figures")
    decidedBy: str | None = Field(default=None, description="rollout decisions of a private model: the job")
    trigger: str | None = Field(default=None, description="models.retrain: drift or labelledData")
    jobId: str | None = Field(default=None, description="models.retrain on drift: the drifted job")
    parentVersion: str | None = Field(default=None, description="models.retrain: the version it started from")
    version: str | None = Field(default=None, description="models.retrain: the version it registered")
    metrics: dict[str, Any] | None = Field(
        default=None, description="models.retrain: the new version's evaluation figures, named by the trainer"
    )
    error: ErrorDetail | None = Field(default=None, description="models.retrain: why the run failed")
    trainer: TrainerView | None = Field(default=None, description="models.retrain: where it trained")


class AuditItem(BaseModel):
    id: str
    time: str
    actor: AuditActor
    action: str
    target: str
    outcome: str
    requestId: str
    statusCode: int | None
    details: AuditDetails | None = Field(
        default=None, description="the figures behind a decision the platform took itself (a rollout's gates)"
    )


class AuditPage(BaseModel):
    items: list[AuditItem]
    continuationToken: str | None


def identity_router(platform_dep: Any) -> APIRouter:
    """`platform_dep` is the API's Depends() marker of the Platform."""
    router = APIRouter(tags=["Keys and audit"])

    @router.post("/api/v1/keys", status_code=201, response_model=CreatedKey, responses=errors(*AUTHED, 409))
    def create_key(body: KeyRequest, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN) -> dict[str, Any]:
        key, secret = tenants.create_key(plat, tenant.tenant_id, body.name, body.role)
        return {**key.public_view(), "key": secret}

    @router.get("/api/v1/keys", response_model=KeyList, responses=errors(*AUTHED))
    def list_keys(plat: Platform = platform_dep, tenant: Caller = AS_ADMIN) -> dict[str, Any]:
        return {"items": [key.public_view() for key in tenants.list_keys(plat, tenant.tenant_id)]}

    @router.delete("/api/v1/keys/{key_id}", status_code=204, responses=errors(*AUTHED, 404))
    def revoke_key(key_id: str, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN) -> Response:
        if len(key_id) > 64:
            raise NotFound("key not found")
        tenants.revoke_key(plat, tenant.tenant_id, key_id)
        return Response(status_code=204)

    @router.get("/api/v1/audit", response_model=AuditPage, responses=errors(*AUTHED))
    def list_audit(
        plat: Platform = platform_dep,
        tenant: Caller = AS_ADMIN,
        since: Annotated[str | None, Query(max_length=40, description="ISO 8601; entries from then on")] = None,
        action: Annotated[str | None, Query(max_length=64, description="only this action, e.g. jobs.submit")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        continuationToken: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        return audit.list_audit(
            plat, tenant.tenant_id, since=since, action=action, limit=limit, continuation_token=continuationToken
        )

    return router
