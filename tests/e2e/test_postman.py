"""The committed Postman collection, run by newman against the local stack as a fresh tenant: every test passes."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.localhost.emulators import free_port
from shared.localhost.host import LocalHost

REPO = Path(__file__).resolve().parents[2]
NEWMAN = REPO / "node_modules/.bin/newman"
COLLECTION = REPO / "docs/postman/aiaas.postman_collection.json"


class _Handshake(BaseHTTPRequestHandler):
    """A webhook that passes Event Grid's validation handshake and takes every event."""

    def do_POST(self) -> None:
        events: Any = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"[]")
        first = events[0] if isinstance(events, list) and events else {}
        body = b""
        if first.get("eventType") == "Microsoft.EventGrid.SubscriptionValidationEvent":
            body = json.dumps({"validationResponse": first["data"]["validationCode"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handshake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/events"
    finally:
        server.shutdown()
        server.server_close()


def test_newman_runs_the_collection_and_every_test_passes(
    stack: LocalHost, create_tenant: Any, webhook: str, tmp_path: Path
) -> None:
    if not NEWMAN.exists():
        pytest.fail("newman is missing: run `npm ci` (make test does)")
    api: httpx.Client = create_tenant("postman")
    key = api.headers["Authorization"].removeprefix("Bearer ")
    report = tmp_path / "newman.json"
    run = subprocess.run(
        [
            str(NEWMAN),
            "run",
            str(COLLECTION),
            "--env-var",
            f"baseUrl={stack.api_url}",
            "--env-var",
            f"apiKey={key}",
            "--env-var",
            f"webhookUrl={webhook}",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--timeout-request",
            "60000",
            "--disable-unicode",
            "--color",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert report.exists(), run.stdout + run.stderr
    result = json.loads(report.read_text())["run"]
    stats = result["stats"]
    failures = [
        f"{f['source'].get('name')}: {f['error'].get('test') or ''} {f['error'].get('message')}"
        for f in result["failures"]
    ]
    executed = {e["item"]["name"] for e in result["executions"]}
    print(
        f"newman: {stats['requests']['total']} requests, {stats['assertions']['total']} assertions, "
        f"{stats['assertions']['failed']} failed, {len(result['failures'])} failures"
    )
    assert not failures, "\n".join(failures) + "\n" + run.stdout[-4000:]
    assert run.returncode == 0, run.stdout[-4000:]
    # Every request of the collection ran (none skipped for want of a webhook): the subscription ones included.
    every = {item["name"] for folder in json.loads(COLLECTION.read_text())["item"] for item in folder["item"]}
    assert every <= executed, sorted(every - executed)
