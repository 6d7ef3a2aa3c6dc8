"""Swagger UI at /api/docs, its script, stylesheet and icon served by the platform itself (no CDN at run time)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from shared.api.static_files import asset_map, asset_response, security_headers

STATIC = Path(__file__).parent / "static"
# scripts/vendor_swagger_ui.py copies swagger-ui-dist into one folder named after its version; the URLs carry that
# name, so a browser may keep an asset for good and an upgrade is fetched anew.
(VENDORED,) = sorted(STATIC.glob("swagger-ui-*"))
DOCS_PATH = "/api/docs"
ASSETS_PATH = f"{DOCS_PATH}/static/{VENDORED.name}"
ASSETS = asset_map(VENDORED)  # the script, the stylesheet and the icon (the licence files are not served)
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_page(openapi_url: str, title: str) -> HTMLResponse:
    """FastAPI's Swagger UI page with every URL on the platform and a policy that lets nothing else load."""
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        # The online validator badge would send the document to validator.swagger.io; no OAuth2 flow either (the
        # API takes a bearer key), so no oauth2-redirect page is served.
        swagger_ui_parameters={"validatorUrl": None},
        oauth2_redirect_url=None,
    )
    # The page starts Swagger UI from one inline script: allowed by its hash, so no other inline script runs.
    hashes = [
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(bytes(page.body).decode())
    ]
    page.headers.update(security_headers(script_hashes=hashes))
    return page


def apidocs_router(openapi_url: str, title: str) -> APIRouter:
    """GET /api/docs (the page) and /api/docs/static/swagger-ui-<version>/<asset>, none of them in the OpenAPI."""
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH)
    def swagger_ui() -> Response:
        return docs_page(openapi_url, title)

    @router.get(f"{ASSETS_PATH}/{{asset}}")
    def swagger_ui_asset(asset: str) -> Response:
        # Named after its version: a browser may keep an asset for good.
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
        return asset_response(ASSETS, asset, headers, "API docs asset")

    return router
