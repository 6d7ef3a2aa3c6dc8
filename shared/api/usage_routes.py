"""GET /api/v1/usage: what the tenant's finished jobs used, by model or by day, and its quotas with what is left."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from shared.api.auth import AS_READER, Caller
from shared.api.schemas import AUTHED, UsageReport, errors
from shared.domain.errors import InvalidInput
from shared.domain.usage import GROUP_BY
from shared.services.platform import Platform
from shared.services.usage import usage_report


def usage_router(platform_dep: Any) -> APIRouter:
    """Routes under /api/v1/usage; `platform_dep` is the API's Depends() marker of the Platform."""
    router = APIRouter()

    @router.get(
        "/api/v1/usage", response_model=UsageReport, response_model_exclude_unset=True, responses=errors(*AUTHED)
    )
    def get_usage(
        plat: Platform = platform_dep,
        tenant: Caller = AS_READER,
        start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        groupBy: Annotated[str, Query(max_length=10)] = "model",
    ) -> dict[str, Any]:
        """Jobs that ended in [from, to) (dates or ISO 8601 datetimes, UTC; a `to` date counts through its end;
        the last 30 days by default), each counted once whatever retries happened."""
        if groupBy not in GROUP_BY:
            raise InvalidInput(f"groupBy must be one of {', '.join(GROUP_BY)}", code="InvalidGroupBy")
        return usage_report(plat, tenant.tenant_id, start=start, end=end, group_by=groupBy)

    return router
