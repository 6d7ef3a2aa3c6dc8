"""A Logic Apps style callback: 202 to every request, no validation echo; records what it was sent (demo, tests)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LogicAppsCallback:
    """Plays the URL `listCallbackUrl()` gives a Logic Apps webhook trigger, on a free loopback port.

    Like Logic Apps' endpoint it answers 202 Accepted to every POST whatever its body (an Event Grid validation
    event included: it never echoes a `validationCode`), and to any other method too. `requests` holds every request
    raw (method, path, headers, body); `events` every JSON body of a POST, in arrival order, as it came.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.events: list[Any] = []
        self.arrived_at: list[float] = []  # time.time() of each event's arrival (the bench's latency)
        self._cv = threading.Condition()
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _accept(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with callback._cv:
                    callback.requests.append(
                        {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    if self.command == "POST" and raw:
                        callback.events.append(body)
                        callback.arrived_at.append(time.time())
                    callback._cv.notify_all()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _accept

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="logicapps-callback", daemon=True)

    @property
    def url(self) -> str:
        """Shaped like a Logic Apps callback URL: the signature in the query string (which the platform never shows)."""
        port = self._server.server_port
        return f"http://127.0.0.1:{port}/workflows/local/triggers/manual/paths/invoke?api-version=2016-10-01&sig=local"

    def __enter__(self) -> LogicAppsCallback:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float) -> list[Any]:
        """Waits until at least `count` events arrived (or the timeout); returns what arrived."""
        return self.wait_until(lambda: len(self.events) >= count, timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> list[Any]:
        """Waits until `predicate()` holds (checked at every request) or the timeout; returns the events."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate() and time.monotonic() < deadline:
                self._cv.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            return list(self.events)
