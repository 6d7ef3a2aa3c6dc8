"""Upload-to-event latency through the Logic Apps path (callback via the relay) next to a plain webhook's, locally.

One tenant with both subscriptions; N small files uploaded one at a time (BENCH_LOGICAPPS_JOBS, default 20, of
BENCH_LOGICAPPS_ROWS rows, default 50); for each, the seconds from the start of its SAS upload to its event at the
webhook and at the Logic-Apps-style callback (202 to everything). Writes bench/logicapps_latency.json (or argv[1]).
Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from stack import Stack, percentiles
from workloads import rows

from shared.localhost.logicapps_callback import LogicAppsCallback

JOBS = int(os.environ.get("BENCH_LOGICAPPS_JOBS", "20"))
ROWS = int(os.environ.get("BENCH_LOGICAPPS_ROWS", "50"))
OUT = Path(__file__).resolve().parent / "logicapps_latency.json"


def _of(events: list[Any], blob_path: str) -> bool:
    return any(isinstance(e, dict) and e.get("data", {}).get("input", {}).get("blobPath") == blob_path for e in events)


def measure(jobs: int = JOBS, count: int = ROWS) -> dict[str, Any]:
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with Stack(workers=2) as stack, LogicAppsCallback() as callback:
        stack.api.post("/v1/subscriptions", json={"callbackUrl": callback.url}).raise_for_status()
        content = b"".join(rows(count))
        stack.upload("warm.jsonl", content)  # first imports, connections, the model's load
        stack.wait_events(1, timeout=120)
        callback.wait_for(1, timeout=120)
        webhook_s, logicapps_s, relay_extra_s = [], [], []
        for i in range(jobs):
            started = time.time()
            blob_path = stack.upload(f"logicapps-{i}.jsonl", content)
            stack.hook.wait_until(lambda p=blob_path: _of(stack.hook.events, p), timeout=120)  # type: ignore[misc]
            webhook_at = time.time()
            callback.wait_until(lambda p=blob_path: _of(callback.events, p), timeout=120)  # type: ignore[misc]
            [arrived] = [t for e, t in zip(callback.events, callback.arrived_at, strict=True) if _of([e], blob_path)]
            webhook_s.append(webhook_at - started)
            logicapps_s.append(arrived - started)
            relay_extra_s.append(arrived - webhook_at)
        duplicates = len(callback.events) - len({e["id"] for e in callback.events if isinstance(e, dict)})
        return {
            "startedAt": started_at,
            "machine": {"cpus": os.cpu_count()},
            "jobs": jobs,
            "rowsPerFile": count,
            "what": "seconds from the start of a file's SAS upload to its terminal event at the subscriber",
            "logicApps": {"path": "broker -> /api/relay -> callback (202)", **percentiles(logicapps_s)},
            "webhook": {"path": "broker -> webhook (200)", **percentiles(webhook_s)},
            "relayExtra": {"what": "callback arrival minus webhook arrival, per job", **percentiles(relay_extra_s)},
            "callbackDuplicates": duplicates,
        }


if __name__ == "__main__":
    result = measure()
    print(json.dumps(result, indent=2))
    (Path(sys.argv[1]) if len(sys.argv) > 1 else OUT).write_text(json.dumps(result, indent=2) + "\n")
