"""The HTTP API as an ASGI app, served by the Functions host (AsgiFunctionApp) or the local host (uvicorn)."""

from __future__ import annotations

import threading
from typing import Any

from starlette.types import Receive, Scope, Send

from shared.bootstrap import get_platform
from shared.config import get_settings


class LazyAsgiApp:
    """Builds the FastAPI app on its first call (a request or the lifespan startup), not at import.

    Importing function_app must read no setting: a missing or wrong one would otherwise hide every function
    of the app, where now only the API's requests fail, each with the settings' error in the log.
    """

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                from shared.api.app import create_app
                from shared.api.auth import AuthOptions

                settings = get_settings()
                self._app = create_app(
                    get_platform,
                    # Loopback webhooks only by the explicit development setting (refused in production).
                    allow_loopback_webhooks=settings.allow_loopback_endpoints,
                    auth=AuthOptions.from_settings(settings),
                    relay_key=settings.relay_key,
                    # The relay answers before its caller gives up (Event Grid: 30 s; the local broker: its setting).
                    relay_timeout_seconds=min(25.0, settings.event_delivery_timeout_seconds * 25 / 30),
                )
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app if self._app is not None else self._build()
        await app(scope, receive, send)


asgi_app = LazyAsgiApp()
