"""`make bench`: raw model limits, the pipeline on the local stack, a peer (Ray Data), fair share between tenants,
Azure cost per 1M records, 1-vs-2-worker scaling of every built-in model, and peak memory.

Writes bench/results.json and prints a table. Figures only: nothing here asserts a time.
Knobs: BENCH_SIZES (e.g. "1000,100000,1000000"), BENCH_TEXT_ROWS, BENCH_LATENCY_FILES, BENCH_MEMORY_MB,
BENCH_RAY_ROWS, BENCH_FAIR_A_FILES/_A_ROWS/_B_FILES/_B_INTERVAL, BENCH_DIGITS_IMAGES, BENCH_ZERO_SHOT_ROWS, and
BENCH_SKIP_RAY, BENCH_SKIP_FAIRNESS, BENCH_SKIP_COST, BENCH_SKIP_SCALING, BENCH_SKIP_MEMORY (=1 skips a part).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO))  # after bench/ itself, so the bench's modules import as siblings

import http_trace  # noqa: E402
from cost import COST_TAIL_SECONDS, azure_cost  # noqa: E402
from fairness import noisy_neighbour  # noqa: E402
from peer import ray_data  # noqa: E402
from stack import Stack, latency, peak_rss_mb, pipeline, rows  # noqa: E402
from workloads import TABULAR, TEXT, TEXT_ROWS, WORKLOADS, raw_limit  # noqa: E402

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "1000,100000,1000000").split(",")]
LATENCY_FILES = int(os.environ.get("BENCH_LATENCY_FILES", "20"))
MEMORY_MB = int(os.environ.get("BENCH_MEMORY_MB", "1024"))


def skip(part: str) -> bool:
    return os.environ.get(f"BENCH_SKIP_{part}", "") not in ("", "0")


def public(run: dict[str, Any]) -> dict[str, Any]:
    """A run without the keys kept for the cost figures."""
    return {k: v for k, v in run.items() if not k.startswith("_")}


def main() -> int:
    began = time.perf_counter()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    results["rawByModel"] = []
    for work in WORKLOADS:
        print(f"raw limit of {work.model} (parse + model, one process, no I/O)...", flush=True)
        results["rawByModel"].append(raw_limit(work))
    raw = {r["model"]: r["rowsPerSecond"] for r in results["rawByModel"]}
    results["raw"] = results["rawByModel"][0]
    if not skip("RAY"):
        # Alone on the machine, as the pipeline runs are: no stack is up yet.
        print(f"peer: Ray Data over {int(os.environ.get('BENCH_RAY_ROWS', '1000000')):,} rows...", flush=True)
        results["peer"] = {"rayData": ray_data()}
    trace_dir = None if skip("COST") else Path(tempfile.mkdtemp(prefix="aiaas-bench-trace-"))
    if trace_dir is not None:
        http_trace.install(str(trace_dir))  # the tenant's uploads from this process count too
    try:
        with Stack(workers=2, trace_dir=trace_dir) as stack:
            print("latency of 500-row files...", flush=True)
            results["latency500"] = latency(stack.default, LATENCY_FILES)
            results["pipeline"] = []
            runs = [(TABULAR, count) for count in SIZES] + [(TEXT, TEXT_ROWS)]
            largest = None
            for work, count in runs:
                print(f"pipeline, {work.model}, {count:,} rows...", flush=True)
                run = pipeline(stack, count, work)
                run["ratioToRaw"] = round(run["rowsPerSecond"] / raw[work.model], 3)
                results["pipeline"].append(public(run))
                if trace_dir is not None:
                    time.sleep(COST_TAIL_SECONDS)  # nothing of the next run may fall in this run's cost window
                if work is TABULAR and (largest is None or count > largest["rows"]):
                    largest = run
            if trace_dir is not None and largest is not None:
                time.sleep(2 * http_trace.FLUSH_SECONDS)  # every process's last flush
                results["azure_cost_per_million"] = azure_cost(largest, trace_dir, stack.ports, events=1)
    finally:
        if trace_dir is not None:
            http_trace.uninstall()
            shutil.rmtree(trace_dir, ignore_errors=True)
    if "peer" in results:
        results["peer"].update(_peer_side_by_side(results, raw))
    if not skip("FAIRNESS"):
        with Stack(workers=2) as stack:
            print("noisy neighbour: tenant B's small files while tenant A's burst is queued...", flush=True)
            results["fairShare"] = noisy_neighbour(stack)
    if not skip("SCALING"):
        results["scaling"] = scaling()
    if not skip("MEMORY"):
        with Stack(workers=2) as stack:
            target = MEMORY_MB * 1024 * 1024
            count = target // len(b"".join(rows(1000))) * 1000
            print(f"peak memory while a {MEMORY_MB} MB file ({count:,} rows) runs...", flush=True)
            run = public(pipeline(stack, count))
            run["peakRssMb"] = {name: peak_rss_mb(pid) for name, pid in stack.pids().items()}
            results["memory"] = run
    results["benchSeconds"] = round(time.perf_counter() - began)
    out = REPO / "bench/results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten to {out.relative_to(REPO)} in {results['benchSeconds']} s")
    return 0


def _peer_side_by_side(results: dict[str, Any], raw: dict[str, int]) -> dict[str, Any]:
    tabular = [r for r in results.get("pipeline", []) if r["model"] == TABULAR.model]
    side: dict[str, Any] = {"rawLimit": {"rows": results["raw"]["rows"], "rowsPerSecond": raw[TABULAR.model]}}
    ray = results["peer"]["rayData"]
    if "rowsPerSecond" in ray:
        ray["ratioToRaw"] = round(ray["rowsPerSecond"] / raw[TABULAR.model], 3)
    if tabular:
        big = max(tabular, key=lambda r: r["rows"])
        side["pipeline"] = {
            "rows": big["rows"],
            "rowsPerSecond": big["rowsPerSecond"],
            "rowsPerSecondAfterUpload": big["rowsPerSecondAfterUpload"],
            "ratioToRaw": big["ratioToRaw"],
        }
    return side


def scaling() -> dict[str, Any]:
    """Every built-in model on one stack of 1 worker, then one of 2: the ratio and where the CPU went."""
    runs: dict[int, dict[str, dict[str, Any]]] = {1: {}, 2: {}}
    for workers in (1, 2):
        with Stack(workers=workers) as stack:
            for work in WORKLOADS:
                print(f"scaling: {work.model}, {work.scaling_rows:,} records with {workers} worker(s)...", flush=True)
                runs[workers][work.model] = public(pipeline(stack, work.scaling_rows, work))
    out: dict[str, Any] = {}
    for work in WORKLOADS:
        one, two = runs[1][work.model], runs[2][work.model]
        entry = {"model": work.model, "workers1": one, "workers2": two}
        entry["ratio2to1"] = round(two["rowsPerSecond"] / one["rowsPerSecond"], 3)
        entry["limit"] = limit_sentence(work.file_type, two)
        out[work.model] = entry
    return out


def limit_sentence(file_type: str, run: dict[str, Any]) -> str:
    """What holds a 2-worker run back on this machine, read from its shards, upload time and CPU profile."""
    share = run["cpuShareByProcess"]
    busy = sum(share.values())
    workers = sum(v for k, v in share.items() if k.startswith("worker"))
    parts = []
    if run["shards"] < 2:
        why = f"a {file_type} is never split" if file_type == ".zip" else "the file fits in one shard"
        parts.append(f"one shard ({why}), so the second worker idles")
    parts.append(
        f"cores {busy:.0%} busy: workers {workers:.0%}, stand-ins and host {busy - workers:.0%} of the machine"
    )
    if run["uploadSeconds"] > 0.2 * run["uploadToEventSeconds"]:
        parts.append(f"the upload ({run['uploadSeconds']} of {run['uploadToEventSeconds']} s) is not shared out")
    if busy >= 0.85:
        parts.append("CPU-bound: a second worker can only take cores from the stand-ins")
    return "; ".join(parts)


def print_table(r: dict[str, Any]) -> None:
    for raw in r["rawByModel"]:
        print(f"raw limit  {raw['model']:<29} {raw['rowsPerSecond']:>8,} rows/s  ({raw['rows']:,} {raw['fileType']})")
    for run in r.get("pipeline", []):
        print(
            f"pipeline   {run['model']:<29} {run['rows']:>9,} rows {run['rowsPerSecond']:>8,} rows/s  "
            f"ratio {run['ratioToRaw']:.2f}  upload->event {run['uploadToEventSeconds']}s "
            f"(upload {run['uploadSeconds']}s, {run['shards']} shards)"
        )
        print("    cpu s: " + ", ".join(f"{k} {v}" for k, v in run["cpuSecondsByProcess"].items()))
    if "latency500" in r:
        lat = r["latency500"]
        print(f"latency, 500 rows    p50 {lat['p50Seconds']}s  p95 {lat['p95Seconds']}s  over {lat['files']} files")
    if "peer" in r:
        _print_peer(r["peer"])
    if "fairShare" in r:
        _print_fair_share(r["fairShare"])
    if "azure_cost_per_million" in r:
        _print_cost(r["azure_cost_per_million"])
    if "scaling" in r:
        print("scaling, 1 vs 2 workers (both share two cores with Azurite, the Cosmos stand-in and the host):")
        for model, sc in r["scaling"].items():
            print(
                f"  {model:<29} 1 worker {sc['workers1']['rowsPerSecond']:>7,} rows/s, 2 workers "
                f"{sc['workers2']['rowsPerSecond']:>7,} rows/s: {sc['ratio2to1']}x"
            )
            share = sc["workers2"]["cpuShareByProcess"]
            print("      cpu share (2 workers): " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))
            print(f"      limit: {sc['limit']}")
    if "memory" in r:
        mem = r["memory"]
        print(f"peak RSS (MB) on {mem['rows']:,} rows: " + ", ".join(f"{k} {v}" for k, v in mem["peakRssMb"].items()))


def _print_peer(peer: dict[str, Any]) -> None:
    raw = peer["rawLimit"]
    print(f"peer, breast-cancer-classifier  raw limit (orjson + ONNX loop) {raw['rowsPerSecond']:,} rows/s")
    if "pipeline" in peer:
        p = peer["pipeline"]
        print(
            f"    pipeline  {p['rows']:>9,} rows {p['rowsPerSecond']:>8,} rows/s (after upload "
            f"{p['rowsPerSecondAfterUpload']:,})  ratio to raw {p['ratioToRaw']:.2f}"
        )
    ray = peer["rayData"]
    if "rowsPerSecond" in ray:
        print(
            f"    Ray Data  {ray['rows']:>9,} rows {ray['rowsPerSecond']:>8,} rows/s  "
            f"ratio to raw {ray['ratioToRaw']:.2f}"
            f"  (ray {ray['ray']}, read_json -> map_batches x{ray['actors']} actors -> write_json; "
            f"init {ray['initSeconds']}s not counted)"
        )
    else:
        print(f"    Ray Data  not measured: {ray}")


def _print_fair_share(f: dict[str, Any]) -> None:
    a0, a1, b0, b1 = f["tenantAAlone"], f["tenantAWithB"], f["tenantBAlone"], f["tenantBWithA"]
    print(
        f"fair share  A: {a0['files']} x {a0['rowsPerFile']:,} rows at once, alone {a0['rowsPerSecond']:,} rows/s, "
        f"with B {a1['rowsPerSecond']:,} rows/s: drop {f['aThroughputDrop']:.1%} (target <= 10%)"
    )
    print(
        f"            B: {b1['files']} x {b1['rowsPerFile']} rows every {b1['intervalSeconds']}s while A's are queued: "
        f"p50 {b1['p50Seconds']}s p95 {b1['p95Seconds']}s (target p95 <= 1 s); alone p50 {b0['p50Seconds']}s "
        f"p95 {b0['p95Seconds']}s"
    )
    if f["settings"]:
        print("            settings: " + ", ".join(f"{k}={v}" for k, v in f["settings"].items()))


def _print_cost(c: dict[str, Any]) -> None:
    m = c["measuredOn"]
    print(f"Azure meters per 1,000,000 records (counted on {m['rows']:,} rows, {m['shards']} shards):")
    blob = c["blob"]
    print(
        "    blob: "
        + ", ".join(f"{k} {v:,}" for k, v in blob["operations"].items())
        + f"; {blob['bytesSent'] / 1e6:,.0f} MB sent, {blob['bytesReceived'] / 1e6:,.0f} MB received"
    )
    cosmos = c["cosmos"]
    print(
        "    cosmos: "
        + ", ".join(f"{k} {v:,}" for k, v in cosmos["requests"].items())
        + f"; ~{cosmos['requestUnitsTotal']:,} RU (estimate)"
    )
    q, fn = c["queue"], c["functions"]
    print(f"    queue: {q['messages']:,} messages, {q['serviceBusOperations']:,} Service Bus operations")
    print(
        f"    functions: {fn['executions']:,} executions, {fn['executionSeconds']:,} s "
        f"({fn['gbSeconds']:,} GB-s), worker CPU {fn['workerCpuSeconds']:,} s"
    )
    if c["prices"].get("applied"):
        print(f"    priced: {c['prices']['totalUsd']} USD ({c['prices']['source']})")


if __name__ == "__main__":
    sys.exit(main())
