"""Open Inference Protocol (KServe V2) REST under /api/v2: health, metadata and infer for a caller's models."""

from typing import Any

from fastapi import APIRouter


def oip_router(platform_dep: Any, caller_dep: Any) -> APIRouter:
    """Routes under /api/v2; `platform_dep`/`caller_dep` are the API's Depends() markers for Platform and Tenant."""
    return APIRouter()
