"""Counts every HTTP request a process sends through `requests` (the Azure SDKs' transport), for the cost figures.

Bench-only and outside the platform: bench/tracehook/sitecustomize.py installs it in every platform process the
bench starts (BENCH_TRACE_DIR set), and the bench installs it in itself for the tenant's uploads. Each process
appends one JSON line per request to BENCH_TRACE_DIR/<pid>.jsonl, flushed twice a second and at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FLUSH_SECONDS = 0.5
# Headers that tell Cosmos operations apart (the REST API's own: a query and an upsert are both POST .../docs).
_COSMOS_HEADERS = ("x-ms-documentdb-isquery", "x-ms-documentdb-is-upsert")

_pending: list[dict[str, Any]] = []
_lock = threading.Lock()
_installed = False
_originals: list[Any] = []


def install(trace_dir: str | None = None) -> bool:
    """Wraps requests.Session.send once; True when tracing is on (a directory given or in BENCH_TRACE_DIR)."""
    global _installed
    directory = trace_dir or os.environ.get("BENCH_TRACE_DIR")
    if not directory or _installed:
        return _installed
    import requests

    out = Path(directory) / f"{os.getpid()}.jsonl"
    original = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        started = time.time()
        response = original(self, request, **kwargs)
        _record(request, response, started, streamed=bool(kwargs.get("stream")))
        return response

    requests.Session.send = send  # type: ignore[method-assign]
    threading.Thread(target=_flush_forever, args=(out,), name="http-trace", daemon=True).start()
    atexit.register(_flush, out)
    _originals.append(original)
    _installed = True
    return True


def uninstall() -> None:
    """Stops counting in this process (the bench, once its traced stack is gone)."""
    global _installed
    if _originals:
        import requests

        requests.Session.send = _originals.pop()  # type: ignore[method-assign]
    with _lock:
        _pending.clear()
    _installed = False


def _record(request: Any, response: Any, started: float, *, streamed: bool) -> None:
    url = urlsplit(request.url or "")
    query = parse_qs(url.query)
    headers = {k.lower(): v for k, v in request.headers.items()}
    entry: dict[str, Any] = {
        "t": round(started, 4),
        "s": round(time.time() - started, 4),
        "port": url.port,
        "method": request.method,
        "path": url.path,
        "comp": query.get("comp", [""])[0],
        "restype": query.get("restype", [""])[0],
        "range": "x-ms-range" in headers or "range" in headers,
        "status": response.status_code,
        "sent": _length(request.body, headers.get("content-length")),
        "received": int(response.headers.get("Content-Length") or 0),
    }
    for name in _COSMOS_HEADERS:
        if str(headers.get(name, "")).lower() == "true":
            entry[name] = True
    # A queue receive answers a list of messages: how many it held tells a delivery from an empty poll.
    if url.path.endswith("/messages") and request.method == "GET" and not streamed:
        entry["messages"] = response.content.count(b"<QueueMessage>")
    with _lock:
        _pending.append(entry)


def _length(body: Any, header: str | None) -> int:
    if header:
        return int(header)
    if isinstance(body, bytes | str):
        return len(body)
    return 0


def _flush(out: Path) -> None:
    with _lock:
        batch = list(_pending)
        _pending.clear()
    if batch and out.parent.is_dir():
        with out.open("a") as file:
            file.writelines(json.dumps(entry) + "\n" for entry in batch)


def _flush_forever(out: Path) -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        _flush(out)


def read(trace_dir: Path, since: float, until: float) -> dict[int, list[dict[str, Any]]]:
    """The requests each process sent in [since, until], by pid."""
    found: dict[int, list[dict[str, Any]]] = {}
    for file in trace_dir.glob("*.jsonl"):
        entries = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        window = [e for e in entries if since <= e["t"] <= until]
        if window:
            found[int(file.stem)] = window
    return found
