"""A throwaway local platform for the bench (`aiaas up` in its own process), its tenants, and timed runs on it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob import BlobClient
from workloads import REPO, TABULAR, Workload, rows

from shared.localhost.emulators import free_port
from shared.localhost.webhook_receiver import WebhookReceiver

TRACE_HOOK = Path(__file__).resolve().parent / "tracehook"


class Tenant:
    """A tenant of a bench stack: its API client and the webhook its events are delivered to."""

    def __init__(self, stack: Stack, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.hook = WebhookReceiver().__enter__()
        created = subprocess.run(
            [str(REPO / ".venv/bin/aiaas"), "tenants", "create", tenant_id, "--json"],
            env=stack.env,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        key = json.loads(created.stdout)["apiKey"]
        self.api = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        self.api.post("/v1/subscriptions", json={"endpointUrl": self.hook.url}).raise_for_status()

    def upload(self, name: str, chunks: Iterator[bytes] | bytes, work: Workload = TABULAR) -> str:
        """Uploads a file through a SAS URL, as a tenant does; returns its blob path (events name it)."""
        request: dict[str, Any] = {"model": work.model, "filename": name}
        if work.parameters:
            request["parameters"] = work.parameters
        answer = self.api.post("/v1/uploads", json=request).raise_for_status().json()
        BlobClient.from_blob_url(answer["uploadUrl"], max_block_size=8 * 1024 * 1024).upload_blob(
            chunks, max_concurrency=2
        )
        return str(answer["blobPath"])

    def wait_events(self, count: int, timeout: float = 3600) -> list[dict[str, Any]]:
        return self.hook.wait_for(count, timeout=timeout)

    def close(self) -> None:
        self.api.close()
        self.hook.__exit__(None, None, None)


class Stack:
    """`aiaas up` with its own ports and data directory, and tenant `bench`; `trace_dir` counts its HTTP requests."""

    def __init__(self, workers: int, *, trace_dir: Path | None = None) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="aiaas-bench-"))
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}/api"
        self.env = {
            **os.environ,
            "AIAAS_ENVIRONMENT": "development",  # a local stack on the stand-ins' well-known keys
            "AIAAS_API_PORT": str(self.api_port),
            "AIAAS_AZURITE_BLOB_PORT": str(free_port()),
            "AIAAS_AZURITE_QUEUE_PORT": str(free_port()),
            "AIAAS_AZURITE_TABLE_PORT": str(free_port()),
            "AIAAS_COSMOS_PORT": str(free_port()),
            "AIAAS_DATA_DIR": str(self.data_dir),
            "AIAAS_MODELS_DIR": str(REPO / "build/models"),
        }
        self.trace_dir = trace_dir
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)
            self.env["BENCH_TRACE_DIR"] = str(trace_dir)
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TRACE_HOOK), os.environ.get("PYTHONPATH")) if p)
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.tenants: list[Tenant] = []

    @property
    def ports(self) -> dict[str, int]:
        """Which service listens where (the cost figures sort requests by port)."""
        return {
            "blob": int(self.env["AIAAS_AZURITE_BLOB_PORT"]),
            "queue": int(self.env["AIAAS_AZURITE_QUEUE_PORT"]),
            "cosmos": int(self.env["AIAAS_COSMOS_PORT"]),
        }

    def __enter__(self) -> Stack:
        log = (self.data_dir / "up.log").open("wb")
        self.process = subprocess.Popen(
            [str(REPO / ".venv/bin/aiaas"), "up", "--workers", str(self.workers)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.data_dir / "up.log").read_text()[-3000:])
            time.sleep(0.2)
        self.default = self.add_tenant("bench")
        return self

    def add_tenant(self, tenant_id: str) -> Tenant:
        tenant = Tenant(self, tenant_id)
        self.tenants.append(tenant)
        return tenant

    def __exit__(self, *exc: object) -> None:
        for tenant in self.tenants:
            tenant.close()
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # The default tenant's calls, as most runs need only one tenant.
    @property
    def api(self) -> httpx.Client:
        return self.default.api

    @property
    def hook(self) -> WebhookReceiver:
        return self.default.hook

    def upload(self, name: str, chunks: Iterator[bytes] | bytes, work: Workload = TABULAR) -> str:
        return self.default.upload(name, chunks, work)

    def wait_events(self, count: int, timeout: float = 3600) -> list[dict[str, Any]]:
        return self.default.wait_events(count, timeout)

    def pids(self) -> dict[str, int]:
        """The platform's processes: `aiaas up` (API, watcher, broker) and its children, by what they run."""
        assert self.process is not None
        found = {"host (API, watcher, broker)": self.process.pid}
        workers = 0
        for child in _children(self.process.pid):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "azurite" in cmdline:
                found["azurite"] = child
            elif "cosmos_server" in cmdline:
                found["cosmos stand-in"] = child
            elif "shared.localhost.worker" in cmdline:
                found[f"worker {workers}"] = child
                workers += 1
        return found


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children += [int(c) for c in text]
    return children


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def pipeline(stack: Stack, count: int, work: Workload = TABULAR) -> dict[str, Any]:
    """One file of `count` records from upload to its event, with the CPU seconds every platform process spent."""
    before = len(stack.hook.events)
    pids = stack.pids()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wall_started = time.time()
    started = time.perf_counter()
    stack.upload(f"rows-{count}{work.file_type}", work.make(count, "r"), work)
    uploaded = time.perf_counter()
    [*_, event] = stack.wait_events(before + 1)
    done = time.perf_counter()
    # Where the two cores went: the profile that explains a pipeline/raw ratio.
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in pids.items()}
    assert event["data"]["counts"]["succeeded"] == count, event["data"]
    seconds = done - started
    return {
        "model": work.model,
        "rows": count,
        "shards": _shards_of(stack, event),
        "uploadSeconds": round(uploaded - started, 2),
        "uploadToEventSeconds": round(seconds, 2),
        "afterUploadSeconds": round(done - uploaded, 2),
        "rowsPerSecond": round(count / seconds),
        "rowsPerSecondAfterUpload": round(count / (done - uploaded)),
        "cpuSecondsByProcess": cpu,
        # Each process's share of the machine over the run (1.0 = every core busy the whole time).
        "cpuShareByProcess": {name: round(s / (seconds * (os.cpu_count() or 1)), 3) for name, s in cpu.items()},
        # For the cost figures only (run.py leaves keys that start with "_" out of results.json).
        "_window": (wall_started, time.time()),
        "_pids": pids,
    }


def _shards_of(stack: Stack, event: dict[str, Any]) -> int:
    job = stack.api.get(f"/v1/jobs/{event['data']['jobId']}").raise_for_status().json()
    return int(job.get("shards", {}).get("count", 0))


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50Seconds": round(statistics.median(ordered), 3),
        "p95Seconds": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 3),
        "maxSeconds": round(ordered[-1], 3),
    }


def latency(tenant: Tenant, files: int, count: int = 500) -> dict[str, Any]:
    """Upload-to-event seconds of small files, one at a time (nothing else running)."""
    content = b"".join(rows(count))
    seconds = []
    for i in range(files):
        before = len(tenant.hook.events)
        started = time.perf_counter()
        tenant.upload(f"latency-{i}.jsonl", content)
        tenant.wait_events(before + 1, timeout=60)
        seconds.append(time.perf_counter() - started)
    return {"files": files, "rowsPerFile": count, **percentiles(seconds)}
