"""Noisy neighbour: tenant B's small files while tenant A's burst of big files is queued, on one stack."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stack import Stack, Tenant, latency, percentiles
from workloads import rows

A_FILES = int(os.environ.get("BENCH_FAIR_A_FILES", "20"))
A_ROWS = int(os.environ.get("BENCH_FAIR_A_ROWS", "20000"))
B_FILES = int(os.environ.get("BENCH_FAIR_B_FILES", "20"))
B_ROWS = 500
B_INTERVAL = float(os.environ.get("BENCH_FAIR_B_INTERVAL", "0.5"))
UPLOADERS = 4  # A's files go up together, as a client syncing a folder would send them


class EventClock:
    """Stamps each event of a tenant with its arrival time (perf_counter), by the blob path it names."""

    def __init__(self, tenant: Tenant) -> None:
        self.arrived: dict[str, float] = {}
        self._tenant = tenant
        self._stop = threading.Event()
        self._seen = len(tenant.hook.events)
        self._thread = threading.Thread(target=self._follow, name=f"clock-{tenant.tenant_id}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            events = self._tenant.hook.wait_for(self._seen + 1, timeout=0.2)
            now = time.perf_counter()
            for event in events[self._seen :]:
                self.arrived.setdefault(event["data"]["input"]["blobPath"], now)
            self._seen = len(events)

    def wait(self, paths: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(p not in self.arrived for p in paths) and time.monotonic() < deadline:
            time.sleep(0.05)
        missing = [p for p in paths if p not in self.arrived]
        if missing:
            raise TimeoutError(f"{len(missing)} of {len(paths)} jobs of {self._tenant.tenant_id} gave no event")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _burst(tenant: Tenant, content: bytes, tag: str) -> tuple[float, list[str], threading.Event]:
    """Starts A's files uploading together in the background; returns the start time, the paths and a done flag."""
    paths: list[str] = []
    uploaded = threading.Event()
    started = time.perf_counter()

    def run() -> None:
        with ThreadPoolExecutor(max_workers=UPLOADERS) as pool:
            paths.extend(pool.map(lambda i: tenant.upload(f"{tag}-{i}.jsonl", content), range(A_FILES)))
        uploaded.set()

    threading.Thread(target=run, name="burst", daemon=True).start()
    return started, paths, uploaded


def _throughput(clock: EventClock, started: float, paths: list[str]) -> dict[str, Any]:
    clock.wait(paths, timeout=1800)
    seconds = max(clock.arrived[p] for p in paths) - started
    return {
        "files": A_FILES,
        "rowsPerFile": A_ROWS,
        "seconds": round(seconds, 2),
        "rowsPerSecond": round(A_FILES * A_ROWS / seconds),
    }


def noisy_neighbour(stack: Stack) -> dict[str, Any]:
    a, b = stack.add_tenant("tenant-a"), stack.add_tenant("tenant-b")
    a_clock, b_clock = EventClock(a), EventClock(b)
    content = b"".join(rows(A_ROWS))
    small = b"".join(rows(B_ROWS))
    print(f"  B alone: {B_FILES} files of {B_ROWS} rows, one at a time...", flush=True)
    b_alone = latency(b, B_FILES, B_ROWS)
    print(f"  A alone: {A_FILES} files of {A_ROWS:,} rows at once...", flush=True)
    started, paths, uploaded = _burst(a, content, "alone")
    uploaded.wait()
    a_alone = _throughput(a_clock, started, paths)
    print(f"  A's burst again, and B's {B_FILES} files, one every {B_INTERVAL}s, once A's are queued...", flush=True)
    started, paths, uploaded = _burst(a, content, "shared")
    uploaded.wait()
    # B starts once all of A's files are in: the worst moment for B, A's jobs are all queued ahead of it.
    time.sleep(B_INTERVAL)
    b_started: dict[str, float] = {}
    for i in range(B_FILES):
        due = time.perf_counter() + B_INTERVAL
        start = time.perf_counter()
        b_started[b.upload(f"small-{i}.jsonl", small)] = start
        time.sleep(max(0.0, due - time.perf_counter()))
    a_shared = _throughput(a_clock, started, paths)
    b_clock.wait(list(b_started), timeout=1800)
    a_clock.stop()
    b_clock.stop()
    b_seconds = [b_clock.arrived[p] - s for p, s in b_started.items()]
    b_shared = {"files": B_FILES, "rowsPerFile": B_ROWS, "intervalSeconds": B_INTERVAL, **percentiles(b_seconds)}
    return {
        "settings": {k: v for k, v in os.environ.items() if k.endswith("SHARDS_IN_FLIGHT")},
        "tenantBAlone": b_alone,
        "tenantAAlone": a_alone,
        "tenantAWithB": a_shared,
        "tenantBWithA": b_shared,
        "aThroughputDrop": round(1 - a_shared["rowsPerSecond"] / a_alone["rowsPerSecond"], 3),
        "targets": {"bP95Seconds": 1.0, "aThroughputDrop": 0.10},
    }
