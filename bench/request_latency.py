"""Latency of single API requests (what the trust checks cost a call): p50/p95 of GET and POST calls on `aiaas up`."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from stack import Stack
from workloads import rows

CALLS = 400


def timed(call: Any, count: int = CALLS) -> dict[str, float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    ordered = sorted(seconds)
    return {
        "p50Ms": round(1000 * statistics.median(ordered), 2),
        "p95Ms": round(1000 * ordered[max(0, round(0.95 * len(ordered)) - 1)], 2),
    }


def measure() -> dict[str, Any]:
    with Stack(workers=1) as stack:
        api = stack.api
        path = stack.upload("latency.jsonl", b"".join(rows(10)))
        stack.wait_events(1, timeout=120)
        job_id = api.get("/v1/jobs").raise_for_status().json()["items"][0]["jobId"]
        for _ in range(50):  # warm: connections, caches, the first imports
            api.get(f"/v1/jobs/{job_id}").raise_for_status()
        upload = {"model": "breast-cancer-classifier", "filename": "x.jsonl"}
        figures = {
            "GET /v1/jobs/{id}": timed(lambda: api.get(f"/v1/jobs/{job_id}").raise_for_status()),
            "GET /v1/models": timed(lambda: api.get("/v1/models").raise_for_status()),
            "POST /v1/uploads": timed(lambda: api.post("/v1/uploads", json=upload).raise_for_status(), 200),
        }
        return {"blobPath": path, "calls": CALLS, "requests": figures}


if __name__ == "__main__":
    result = measure()
    print(json.dumps(result, indent=2))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(result, indent=2) + "\n")
