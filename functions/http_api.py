"""The HTTP API as an ASGI app, served by the Functions host (AsgiFunctionApp) or the local host (uvicorn)."""

from __future__ import annotations

from shared.api.app import create_app
from shared.bootstrap import get_platform
from shared.config import get_settings

asgi_app = create_app(get_platform, allow_loopback_webhooks=get_settings().is_development)
