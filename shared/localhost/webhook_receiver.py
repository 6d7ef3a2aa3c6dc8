"""A small webhook endpoint that answers Event Grid's handshakes and records events (the demo's and tests')."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Serves on a free loopback port; `events` holds every event delivered, in arrival order."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._fail_first = fail_first
        self._cv = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_OPTIONS(self) -> None:  # CloudEvents abuse protection
                origin = self.headers.get("WebHook-Request-Origin", "")
                self.send_response(200)
                self.send_header("WebHook-Allowed-Origin", origin)
                self.send_header("WebHook-Allowed-Rate", "*")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                    code = body[0]["data"]["validationCode"]
                    self._reply(200, {"validationResponse": code})
                    return
                with receiver._cv:
                    if receiver._fail_first > 0:
                        receiver._fail_first -= 1
                        self._reply(503, {"error": "try later"})
                        return
                    receiver.events.extend(body if isinstance(body, list) else [body])
                    receiver._cv.notify_all()
                self._reply(200, {})

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/events"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Waits until at least `count` events arrived (or the timeout); returns what arrived."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.events) < count and time.monotonic() < deadline:
                self._cv.wait(timeout=max(0.0, deadline - time.monotonic()))
            return list(self.events)
