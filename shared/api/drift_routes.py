"""GET /api/v1/models/{name}/drift: the caller's jobs of a model with their drift verdicts, over time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from shared.api.auth import AS_READER, Caller
from shared.api.schemas import AUTHED, DriftSection, errors
from shared.domain.errors import UnknownModel
from shared.domain.models import MODEL_NAME_PATTERN
from shared.services.drift import MAX_DRIFT_PAGE, drift_report
from shared.services.platform import Platform


class DriftModelRef(BaseModel):
    name: str
    version: str | None


class DriftItem(BaseModel):
    jobId: str
    completedAt: str | None
    status: str = Field(description="the job's status")
    model: DriftModelRef
    records: int
    drift: DriftSection


class DriftPage(BaseModel):
    model: str
    from_: str = Field(alias="from")
    to: str
    items: list[DriftItem]
    continuationToken: str | None


def drift_router(platform_dep: Any) -> APIRouter:
    """Routes under /api/v1/models/{name}/drift; `platform_dep` is the API's Depends() marker of the Platform."""
    router = APIRouter()

    @router.get(
        "/api/v1/models/{name}/drift",
        response_model=DriftPage,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404),
    )
    def get_model_drift(
        name: str,
        plat: Platform = platform_dep,
        tenant: Caller = AS_READER,
        start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DRIFT_PAGE)] = 100,
        continuationToken: Annotated[str | None, Query(max_length=8192)] = None,
    ) -> dict[str, Any]:
        """The caller's jobs of this model that ended in [from, to) (dates or ISO 8601 datetimes, UTC; the last
        30 days by default) with their drift section, newest first; only its own jobs, whoever else runs it."""
        if not MODEL_NAME_PATTERN.fullmatch(name):  # as the registry answers for a name it does not know
            raise UnknownModel(f"no model named {name[:64]!r} is available to you")
        return drift_report(
            plat,
            tenant.tenant_id,
            name,
            start=start,
            end=end,
            limit=limit,
            continuation=continuationToken,
        )

    return router
