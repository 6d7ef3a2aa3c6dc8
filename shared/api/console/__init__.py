"""The web console at /console: one static page and its assets, every one served by the platform itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
# A fixed set read at import: a request names one of these or gets 404, so no path ever reaches the file system.
ASSETS = {
    path.relative_to(STATIC).as_posix(): path
    for path in sorted(STATIC.rglob("*"))
    if path.is_file() and path.suffix in MEDIA_TYPES
}


def storage_origin_from_settings() -> str | None:
    """The origin of the tenants' blob endpoint (where an upload's SAS URL points), from the process settings."""
    from shared.config import get_settings

    settings = get_settings()
    if settings.storage_account_name:
        return f"https://{settings.storage_account_name}.blob.core.windows.net"
    parts = dict(item.split("=", 1) for item in (settings.storage_connection_string or "").split(";") if "=" in item)
    endpoint = urlsplit(parts.get("BlobEndpoint", ""))
    return f"{endpoint.scheme}://{endpoint.netloc}" if endpoint.scheme and endpoint.netloc else None


def security_headers(storage_origin: str | None) -> dict[str, str]:
    """No inline script or style, nothing from elsewhere, never framed; the one other place the page talks to is
    the blob endpoint, which an upload's SAS URL names."""
    connect = "'self'" + (f" {storage_origin}" if storage_origin else "")
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


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
        return security_headers(resolved[0])

    @router.get("/console")
    def console_page() -> Response:
        return FileResponse(ASSETS["index.html"], media_type=MEDIA_TYPES[".html"], headers=headers())

    @router.get("/console/")
    def console_slash() -> Response:
        return RedirectResponse("/console", status_code=307)

    @router.get("/console/static/{asset:path}")
    def console_asset(asset: str) -> Response:
        path = ASSETS.get(asset)
        if path is None or asset == "index.html":
            from shared.domain.errors import NotFound

            raise NotFound("no such console asset")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers())

    return router
