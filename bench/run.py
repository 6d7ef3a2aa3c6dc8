"""`make bench`: the raw model limit, the pipeline on the local stack, latency, peak memory and scaling.

Writes bench/results.json and prints a table. Figures only: nothing here asserts a time.
BENCH_SIZES (e.g. "1000,100000,1000000"), BENCH_LATENCY_FILES and BENCH_MEMORY_MB scale it down or up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from azure.storage.blob import BlobClient  # noqa: E402

from shared.localhost.emulators import free_port  # noqa: E402
from shared.localhost.webhook_receiver import WebhookReceiver  # noqa: E402

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "1000,100000,1000000").split(",")]
LATENCY_FILES = int(os.environ.get("BENCH_LATENCY_FILES", "20"))
MEMORY_MB = int(os.environ.get("BENCH_MEMORY_MB", "1024"))
SAMPLE = [json.loads(line) for line in (REPO / "build/samples/breast-cancer.jsonl").read_text().splitlines()]
MODEL = "breast-cancer-classifier"


def rows(count: int, prefix: str = "r") -> Iterator[bytes]:
    """JSONL rows of the sample cycled, with unique ids, produced in blocks (never the whole file at once)."""
    base = [{k: v for k, v in row.items() if k != "expected"} for row in SAMPLE]
    block: list[bytes] = []
    for i in range(count):
        row = dict(base[i % len(base)])
        row["id"] = f"{prefix}{i}"
        block.append(json.dumps(row).encode())
        if len(block) == 2000:
            yield b"\n".join(block) + b"\n"
            block = []
    if block:
        yield b"\n".join(block) + b"\n"


def raw_limit(count: int = 200_000) -> dict[str, Any]:
    """Parse + model in one process, no I/O: the physical limit the pipeline is measured against."""
    from shared.domain.models import ModelCard
    from shared.inference.predictors import HANDLERS, new_session
    from shared.inference.readers import read_jsonl

    package = REPO / "build/models" / MODEL / "1"
    card = ModelCard(json.loads((package / "card.json").read_text()))
    predictor = HANDLERS[card.handler](card, new_session((package / "model.onnx").read_bytes()))
    data = list(rows(count))
    from shared.bootstrap import tune_gc_for_batch_work

    tune_gc_for_batch_work()  # as the workers do
    started = time.perf_counter()
    batch: list[Any] = []
    scored = 0
    for record in read_jsonl(data):
        batch.append(predictor.prepare(record.value))
        if len(batch) == 1000:
            scored += len(predictor.predict(batch))
            batch = []
    if batch:
        scored += len(predictor.predict(batch))
    seconds = time.perf_counter() - started
    return {"model": MODEL, "rows": scored, "seconds": round(seconds, 3), "rowsPerSecond": round(scored / seconds)}


class Stack:
    """A throwaway local platform (`aiaas up` in its own process), a tenant, a webhook and an API client."""

    def __init__(self, workers: int) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="aiaas-bench-"))
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "AIAAS_API_PORT": str(self.api_port),
            "AIAAS_AZURITE_BLOB_PORT": str(free_port()),
            "AIAAS_AZURITE_QUEUE_PORT": str(free_port()),
            "AIAAS_AZURITE_TABLE_PORT": str(free_port()),
            "AIAAS_COSMOS_PORT": str(free_port()),
            "AIAAS_DATA_DIR": str(self.data_dir),
            "AIAAS_MODELS_DIR": str(REPO / "build/models"),
        }
        self.workers = workers
        self.hook = WebhookReceiver()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Stack:
        log = (self.data_dir / "up.log").open("wb")
        self.process = subprocess.Popen(
            [str(REPO / ".venv/bin/aiaas"), "up", "--workers", str(self.workers)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        api_url = f"http://127.0.0.1:{self.api_port}/api"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.data_dir / "up.log").read_text()[-3000:])
            time.sleep(0.2)
        self.hook.__enter__()
        created = subprocess.run(
            [str(REPO / ".venv/bin/aiaas"), "tenants", "create", "bench", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        key = json.loads(created.stdout)["apiKey"]
        self.api = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        self.api.post("/v1/subscriptions", json={"endpointUrl": self.hook.url}).raise_for_status()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hook.__exit__(None, None, None)
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def upload(self, name: str, chunks: Iterator[bytes] | bytes) -> None:
        answer = self.api.post("/v1/uploads", json={"model": MODEL, "filename": name}).raise_for_status().json()
        BlobClient.from_blob_url(answer["uploadUrl"], max_block_size=8 * 1024 * 1024).upload_blob(
            chunks, max_concurrency=2
        )

    def wait_events(self, count: int, timeout: float = 3600) -> list[dict[str, Any]]:
        return self.hook.wait_for(count, timeout=timeout)

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


def pipeline(stack: Stack, count: int) -> dict[str, Any]:
    before = len(stack.hook.events)
    pids = stack.pids()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    stack.upload(f"rows-{count}.jsonl", rows(count))
    uploaded = time.perf_counter()
    [*_, event] = stack.wait_events(before + 1)
    done = time.perf_counter()
    # Where the two cores went: the profile that explains a pipeline/raw ratio.
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in pids.items()}
    assert event["data"]["counts"]["succeeded"] == count, event["data"]
    return {
        "rows": count,
        "uploadSeconds": round(uploaded - started, 2),
        "uploadToEventSeconds": round(done - started, 2),
        "afterUploadSeconds": round(done - uploaded, 2),
        "rowsPerSecond": round(count / (done - started)),
        "rowsPerSecondAfterUpload": round(count / (done - uploaded)),
        "cpuSecondsByProcess": cpu,
    }


def latency(stack: Stack, files: int, count: int = 500) -> dict[str, Any]:
    content = b"".join(rows(count))
    seconds = []
    for i in range(files):
        before = len(stack.hook.events)
        started = time.perf_counter()
        stack.upload(f"latency-{i}.jsonl", content)
        stack.wait_events(before + 1, timeout=60)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {
        "files": files,
        "rowsPerFile": count,
        "p50Seconds": round(statistics.median(seconds), 3),
        "p95Seconds": round(seconds[max(0, round(0.95 * len(seconds)) - 1)], 3),
        "maxSeconds": round(seconds[-1], 3),
    }


def main() -> int:
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    print("raw limit (parse + model, one process, no I/O)...", flush=True)
    results["raw"] = raw_limit()
    raw = results["raw"]["rowsPerSecond"]
    with Stack(workers=2) as stack:
        print("latency of 500-row files...", flush=True)
        results["latency500"] = latency(stack, LATENCY_FILES)
        results["pipeline"] = []
        for count in SIZES:
            print(f"pipeline, {count:,} rows...", flush=True)
            run = pipeline(stack, count)
            run["ratioToRaw"] = round(run["rowsPerSecond"] / raw, 3)
            results["pipeline"].append(run)
    scaling_rows = min(max(SIZES), 200_000)
    for workers in (1, 2):
        with Stack(workers=workers) as stack:
            print(f"scaling: {scaling_rows:,} rows with {workers} worker(s)...", flush=True)
            results.setdefault("scaling", {})[f"workers{workers}"] = pipeline(stack, scaling_rows)
    scaling = results["scaling"]
    scaling["ratio2to1"] = round(scaling["workers2"]["rowsPerSecond"] / scaling["workers1"]["rowsPerSecond"], 3)
    with Stack(workers=2) as stack:
        target = MEMORY_MB * 1024 * 1024
        count = target // len(b"".join(rows(1000))) * 1000
        print(f"peak memory while a {MEMORY_MB} MB file ({count:,} rows) runs...", flush=True)
        run = pipeline(stack, count)
        run["peakRssMb"] = {name: peak_rss_mb(pid) for name, pid in stack.pids().items()}
        results["memory"] = run
    out = REPO / "bench/results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten to {out.relative_to(REPO)}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    raw = r["raw"]
    print(f"\nraw limit            {raw['rowsPerSecond']:>10,} rows/s  ({raw['model']}, {raw['rows']:,} rows)")
    for run in r["pipeline"]:
        print(
            f"pipeline {run['rows']:>9,} rows {run['rowsPerSecond']:>10,} rows/s  ratio {run['ratioToRaw']:.2f}  "
            f"upload->event {run['uploadToEventSeconds']}s (upload {run['uploadSeconds']}s)"
        )
        print("    cpu s: " + ", ".join(f"{k} {v}" for k, v in run["cpuSecondsByProcess"].items()))
    lat = r["latency500"]
    print(f"latency, 500 rows    p50 {lat['p50Seconds']}s  p95 {lat['p95Seconds']}s  over {lat['files']} files")
    sc = r["scaling"]
    print(
        f"scaling              1 worker {sc['workers1']['rowsPerSecond']:,} rows/s, 2 workers "
        f"{sc['workers2']['rowsPerSecond']:,} rows/s: {sc['ratio2to1']}x"
    )
    mem = r["memory"]
    print(f"peak RSS (MB) on {mem['rows']:,} rows: " + ", ".join(f"{k} {v}" for k, v in mem["peakRssMb"].items()))


if __name__ == "__main__":
    sys.exit(main())
