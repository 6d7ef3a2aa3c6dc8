"""The web console at /console: one static page and its assets, every one served by the platform itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from shared.api.static_files import asset_map, asset_response, security_headers
from shared.domain.errors import NotFound

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ASSETS = asset_map(STATIC)


def storage_origin_from_settings() -> str | None:
    """The origin of the tenants' blob endpoint (where an upload's SAS URL points), from the process settings."""
    from shared.config import get_settings

    settings = get_settings()
    if settings.storage_account_name:
        return f"https://{settings.storage_account_name}.blob.core.windows.net"
    parts = dict(item.split("=", 1) for item in (settings.storage_connection_string or "").split(";") if "=" in item)
    endpoint = urlsplit(parts.get("BlobEndpoint", ""))
    return f"{endpoint.scheme}://{endpoint.netloc}" if endpoint.scheme and endpoint.netloc else None


def console_router(storage_origin: Callable[[], str | None] = storage_origin_from_settings) -> APIRouter:
    """GET /console (the page) and /console/static/<asset>; the page's data calls are the tenant's own /api/v1."""
    router = APIRouter(include_in_schema=False)
    resolved: list[str | None] = []

    def headers() -> dict[str, str]:
        if not resolved:
            try:
                resolved.append(storage_origin())
            except Exception:  # the page still works without uploads; say why in the log
                logger.warning("console: the blob endpoint is unknown, uploads from the page are refused by CSP")
                resolved.append(None)
        # The one other place the page talks to is the blob endpoint, which an upload's SAS URL names.
        return security_headers(connect=[resolved[0]] if resolved[0] else [])

    @router.get("/console")
    def console_page() -> Response:
        return asset_response(ASSETS, "index.html", headers(), "console page")

    @router.get("/console/")
    def console_slash() -> Response:
        return RedirectResponse("/console", status_code=307)

    @router.get("/console/static/{asset:path}")
    def console_asset(asset: str) -> Response:
        if asset == "index.html":  # the page is /console only
            raise NotFound("no such console asset")
        return asset_response(ASSETS, asset, headers(), "console asset")

    return router
