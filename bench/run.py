"""`make bench`: the raw model limit, the pipeline on the local stack, latency, peak memory and scaling.

Writes bench/results.json and prints a table. Figures only: nothing here asserts a time.
BENCH_SIZES (e.g. "1000,100000,1000000"), BENCH_TEXT_ROWS, BENCH_LATENCY_FILES and BENCH_MEMORY_MB scale it.
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
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from azure.storage.blob import BlobClient  # noqa: E402

from shared.localhost.demo import ZERO_SHOT_LABELS  # noqa: E402
from shared.localhost.emulators import free_port  # noqa: E402
from shared.localhost.webhook_receiver import WebhookReceiver  # noqa: E402

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "1000,100000,1000000").split(",")]
TEXT_ROWS = int(os.environ.get("BENCH_TEXT_ROWS", "20000"))
LATENCY_FILES = int(os.environ.get("BENCH_LATENCY_FILES", "20"))
MEMORY_MB = int(os.environ.get("BENCH_MEMORY_MB", "1024"))
SAMPLES = REPO / "build/samples"
BATCH = 1000  # the workers' batch size (Settings.batch_size)


def _jsonl_rows(sample: str, count: int, prefix: str) -> Iterator[bytes]:
    """JSONL rows of a sample cycled, with unique ids, produced in blocks (never the whole file at once)."""
    lines = (SAMPLES / sample).read_text().splitlines()
    base = [{k: v for k, v in json.loads(line).items() if k != "expected"} for line in lines if line.strip()]
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


def rows(count: int, prefix: str = "r") -> Iterator[bytes]:
    """The tabular workload: breast-cancer rows."""
    return _jsonl_rows("breast-cancer.jsonl", count, prefix)


def _texts(count: int, prefix: str) -> Iterator[bytes]:
    """A .txt file: the sample sentences cycled, each made distinct by a number (a line is a record)."""
    texts = [line for line in (SAMPLES / "texts.txt").read_text().splitlines() if line.strip()]
    for start in range(0, count, 2000):
        block = [f"{texts[i % len(texts)]} ({prefix}{i})" for i in range(start, min(count, start + 2000))]
        yield ("\n".join(block) + "\n").encode()


def _digits_zip(count: int, prefix: str) -> Iterator[bytes]:
    """A .zip of `count` PNG digits: the sample's 30 images cycled under distinct names."""
    with zipfile.ZipFile(SAMPLES / "digits.zip") as sample:
        images = [sample.read(name) for name in sample.namelist() if name.endswith(".png")]
    out = BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"{prefix}{i}.png", images[i % len(images)])
    yield out.getvalue()


@dataclass(frozen=True)
class Workload:
    """One built-in model, the file type its records come in, and how to make `count` of them."""

    model: str
    file_type: str
    make: Callable[[int, str], Iterator[bytes]]
    raw_rows: int
    parameters: dict[str, Any] = field(default_factory=dict)


TABULAR = Workload("breast-cancer-classifier", ".jsonl", rows, 200_000)
TEXT = Workload("text-embedding", ".txt", _texts, 3000)
WORKLOADS = [
    TABULAR,
    Workload("transaction-anomaly-detector", ".jsonl", lambda n, p: _jsonl_rows("transactions.jsonl", n, p), 200_000),
    Workload("digits-classifier", ".zip", _digits_zip, 5000),
    TEXT,
    Workload(
        "zero-shot-text-classifier",
        ".jsonl",
        lambda n, p: _jsonl_rows("zero-shot.jsonl", n, p),
        2000,
        {"labels": ZERO_SHOT_LABELS},
    ),
]


def raw_limit(work: Workload) -> dict[str, Any]:
    """Parse + model in one process, no I/O: the physical limit the pipeline is measured against."""
    from shared.bootstrap import tune_gc_for_batch_work
    from shared.domain.models import ModelCard
    from shared.inference.readers import reader_for
    from shared.inference.registry import build_predictor

    package = REPO / "build/models" / work.model / "1"
    card = ModelCard(json.loads((package / "card.json").read_text()))
    files = {item["file"]: (package / item["file"]).read_bytes() for item in card.raw.get("files", [])}
    predictor = build_predictor(card, (package / card.artifact_file).read_bytes(), files)
    if work.parameters:
        predictor = predictor.with_parameters(work.parameters)  # type: ignore[attr-defined]
    data = list(work.make(work.raw_rows, "r"))
    tune_gc_for_batch_work()  # as the workers do
    started = time.perf_counter()
    batch: list[Any] = []
    scored = 0
    for record in reader_for(work.file_type)(data):
        batch.append(predictor.prepare(record.value))
        if len(batch) == BATCH:
            scored += len(predictor.predict(batch))
            batch = []
    if batch:
        scored += len(predictor.predict(batch))
    seconds = time.perf_counter() - started
    return {
        "model": work.model,
        "fileType": work.file_type,
        "rows": scored,
        "seconds": round(seconds, 3),
        "rowsPerSecond": round(scored / seconds),
    }


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

    def upload(self, name: str, chunks: Iterator[bytes] | bytes, work: Workload = TABULAR) -> None:
        request: dict[str, Any] = {"model": work.model, "filename": name}
        if work.parameters:
            request["parameters"] = work.parameters
        answer = self.api.post("/v1/uploads", json=request).raise_for_status().json()
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


def pipeline(stack: Stack, count: int, work: Workload = TABULAR) -> dict[str, Any]:
    before = len(stack.hook.events)
    pids = stack.pids()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    stack.upload(f"rows-{count}{work.file_type}", work.make(count, "r"), work)
    uploaded = time.perf_counter()
    [*_, event] = stack.wait_events(before + 1)
    done = time.perf_counter()
    # Where the two cores went: the profile that explains a pipeline/raw ratio.
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in pids.items()}
    assert event["data"]["counts"]["succeeded"] == count, event["data"]
    return {
        "model": work.model,
        "rows": count,
        "shards": _shards_of(stack, event),
        "uploadSeconds": round(uploaded - started, 2),
        "uploadToEventSeconds": round(done - started, 2),
        "afterUploadSeconds": round(done - uploaded, 2),
        "rowsPerSecond": round(count / (done - started)),
        "rowsPerSecondAfterUpload": round(count / (done - uploaded)),
        "cpuSecondsByProcess": cpu,
    }


def _shards_of(stack: Stack, event: dict[str, Any]) -> int:
    job = stack.api.get(f"/v1/jobs/{event['data']['jobId']}").raise_for_status().json()
    return int(job.get("shards", {}).get("count", 0))


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
    results["rawByModel"] = []
    for work in WORKLOADS:
        print(f"raw limit of {work.model} (parse + model, one process, no I/O)...", flush=True)
        results["rawByModel"].append(raw_limit(work))
    raw = {r["model"]: r["rowsPerSecond"] for r in results["rawByModel"]}
    results["raw"] = results["rawByModel"][0]
    with Stack(workers=2) as stack:
        print("latency of 500-row files...", flush=True)
        results["latency500"] = latency(stack, LATENCY_FILES)
        results["pipeline"] = []
        runs = [(TABULAR, count) for count in SIZES] + [(TEXT, TEXT_ROWS)]
        for work, count in runs:
            print(f"pipeline, {work.model}, {count:,} rows...", flush=True)
            run = pipeline(stack, count, work)
            run["ratioToRaw"] = round(run["rowsPerSecond"] / raw[work.model], 3)
            results["pipeline"].append(run)
    results["scaling"] = {}
    for work, count in ((TABULAR, min(max(SIZES), 200_000)), (TEXT, TEXT_ROWS)):
        scaling: dict[str, Any] = {"model": work.model}
        for workers in (1, 2):
            with Stack(workers=workers) as stack:
                print(f"scaling: {work.model}, {count:,} rows with {workers} worker(s)...", flush=True)
                scaling[f"workers{workers}"] = pipeline(stack, count, work)
        scaling["ratio2to1"] = round(scaling["workers2"]["rowsPerSecond"] / scaling["workers1"]["rowsPerSecond"], 3)
        results["scaling"][work.model] = scaling
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
    for raw in r["rawByModel"]:
        print(f"raw limit  {raw['model']:<29} {raw['rowsPerSecond']:>8,} rows/s  ({raw['rows']:,} {raw['fileType']})")
    for run in r["pipeline"]:
        print(
            f"pipeline   {run['model']:<29} {run['rows']:>9,} rows {run['rowsPerSecond']:>8,} rows/s  "
            f"ratio {run['ratioToRaw']:.2f}  upload->event {run['uploadToEventSeconds']}s "
            f"(upload {run['uploadSeconds']}s, {run['shards']} shards)"
        )
        print("    cpu s: " + ", ".join(f"{k} {v}" for k, v in run["cpuSecondsByProcess"].items()))
    lat = r["latency500"]
    print(f"latency, 500 rows    p50 {lat['p50Seconds']}s  p95 {lat['p95Seconds']}s  over {lat['files']} files")
    for model, sc in r["scaling"].items():
        print(
            f"scaling    {model:<29} 1 worker {sc['workers1']['rowsPerSecond']:,} rows/s, 2 workers "
            f"{sc['workers2']['rowsPerSecond']:,} rows/s: {sc['ratio2to1']}x"
        )
    mem = r["memory"]
    print(f"peak RSS (MB) on {mem['rows']:,} rows: " + ", ".join(f"{k} {v}" for k, v in mem["peakRssMb"].items()))


if __name__ == "__main__":
    sys.exit(main())
