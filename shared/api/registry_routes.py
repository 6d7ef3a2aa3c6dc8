"""Model registry routes beyond listing: tenant-private registration and alias moves."""

from typing import Any

from fastapi import APIRouter


def registry_router(platform_dep: Any, caller_dep: Any) -> APIRouter:
    """Routes under /api/v1/models; `platform_dep`/`caller_dep` are the API's Depends() markers."""
    return APIRouter()
