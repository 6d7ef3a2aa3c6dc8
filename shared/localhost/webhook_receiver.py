"""A small webhook endpoint that answers Event Grid's handshakes and records events (the demo's and tests')."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Serves on a free loopback port; `events` holds every event it accepted (answered 2xx), in arrival order.

    Its behaviour can be steered while it runs, to play an endpoint that is down, refuses or is slow; the
    validation handshake is always answered (the endpoint was up when it subscribed):
    - `down(seconds, status=503)`: every delivery in the next `seconds` gets `status` (None: the connection is
      closed without an answer);
    - `answer_status`: what deliveries get otherwise (200);
    - `slow_first(n, seconds)`: the next `n` deliveries are answered (200) only after `seconds`.
    `deliveries` records every delivery POST raw: event ids, aeg-delivery-count, what it answered.
    """

    def __init__(self, *, fail_first: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.answer_status = 200
        self._fail_first = fail_first
        self._down_until = 0.0
        self._down_status: int | None = 503
        self._slow: tuple[int, float] = (0, 0.0)
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
                headers = dict(self.headers)
                receiver.requests.append({"headers": headers, "body": body})
                if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                    code = body[0]["data"]["validationCode"]
                    self._reply(200, {"validationResponse": code})
                    return
                events = body if isinstance(body, list) else [body]
                status, delay = receiver._decide()
                with receiver._cv:
                    receiver.deliveries.append(
                        {
                            "path": self.path,
                            "eventIds": [event.get("id") for event in events],
                            "deliveryCount": int(self.headers.get("aeg-delivery-count", "-1")),
                            "subscriptionName": self.headers.get("aeg-subscription-name"),
                            "status": status,
                            "slow": delay > 0,
                            "headers": headers,
                        }
                    )
                    receiver._cv.notify_all()
                if delay:
                    time.sleep(delay)
                if status is None:  # down: the connection closes without an answer
                    self.close_connection = True
                    return
                if 200 <= status < 300:
                    with receiver._cv:
                        receiver.events.extend(events)
                        receiver._cv.notify_all()
                with contextlib.suppress(OSError):  # a caller that gave up waiting has closed its end
                    self._reply(status, {} if status < 300 else {"error": "refused"})

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def _decide(self) -> tuple[int | None, float]:
        """The answer to the next delivery (None: close the connection) and how long to wait before it."""
        with self._cv:
            if time.monotonic() < self._down_until:
                return self._down_status, 0.0
            if self._fail_first > 0:
                self._fail_first -= 1
                return 503, 0.0
            count, seconds = self._slow
            if count > 0:
                self._slow = (count - 1, seconds)
                return 200, seconds
            return self.answer_status, 0.0

    def down(self, seconds: float, *, status: int | None = 503) -> None:
        """Deliveries in the next `seconds` get `status` (None: the connection is closed unanswered)."""
        with self._cv:
            self._down_until = time.monotonic() + seconds
            self._down_status = status

    def up(self) -> None:
        with self._cv:
            self._down_until = 0.0

    def slow_first(self, count: int, seconds: float) -> None:
        with self._cv:
            self._slow = (count, seconds)

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
        return self.wait_until(lambda: len(self.events) >= count, timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> list[dict[str, Any]]:
        """Waits until `predicate()` holds (checked at every request) or the timeout; returns the events."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate() and time.monotonic() < deadline:
                self._cv.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            return list(self.events)
