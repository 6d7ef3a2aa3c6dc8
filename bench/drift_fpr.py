"""`make bench`: drift's false/true positive rates on breast-cancer jobs, and what the sketches cost the workers.

Rates: many jobs drawn from the 143 held-out rows (never trained on; the profile's reference is the 426 training
rows), clean and shifted (every feature x1.1 / x1.25 / x1.5, columns shuffled), judged as a job is (the shard
path's sketch, then evaluate). Cost: the worker's parse + validate + predict loop (shards._pages, no storage)
over the same rows with and without a sketch, best of BENCH_DRIFT_REPEATS each, alternated.
Writes bench/drift_fpr.json. Knobs: BENCH_DRIFT_JOBS (jobs per size and shift), BENCH_DRIFT_ROWS (cost rows).
Figures only: nothing here asserts.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO))

JOBS = int(os.environ.get("BENCH_DRIFT_JOBS", "300"))
COST_ROWS = int(os.environ.get("BENCH_DRIFT_ROWS", "100000"))
REPEATS = int(os.environ.get("BENCH_DRIFT_REPEATS", "3"))
SIZES = (25, 50, 100, 143)
MODEL = "breast-cancer-classifier"
COST_MODELS = ("breast-cancer-classifier", "transaction-anomaly-detector")
OUT = REPO / "bench/drift_fpr.json"


def package(name: str) -> tuple[Any, dict[str, Any], Any]:
    from shared.domain.models import ModelCard
    from shared.inference.registry import build_predictor

    pkg = REPO / "build/models" / name / "1"
    card = ModelCard(json.loads((pkg / "card.json").read_text()))
    files = {item["file"]: (pkg / item["file"]).read_bytes() for item in card.raw.get("files", [])}
    profile = json.loads(files[card.raw["drift"]["profile"]])
    return card, profile, build_predictor(card, (pkg / card.artifact_file).read_bytes(), files)


def shifts(card: Any) -> dict[str, Any]:
    names = list(card.raw["features"])

    def scale(factor: float) -> Any:
        return lambda row: {k: v * factor if k in names else v for k, v in row.items()}

    def shuffle(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, **{n: row[names[(i + 1) % len(names)]] for i, n in enumerate(names)}}

    return {"clean": lambda row: row, "x1.1": scale(1.1), "x1.25": scale(1.25), "x1.5": scale(1.5), "shuffled": shuffle}


def rates() -> dict[str, Any]:
    from shared.domain.drift import DriftSketch, evaluate

    card, profile, predictor = package(MODEL)
    rows = [json.loads(line) for line in (REPO / "build/samples/breast-cancer.jsonl").read_text().splitlines()]
    table: dict[str, Any] = {}
    for name, shift in shifts(card).items():
        shifted = [shift(row) for row in rows]
        outputs = predictor.predict([predictor.prepare(row) for row in shifted])
        by_size = {}
        for size in SIZES:
            rng = random.Random(f"{name}:{size}")
            trials = JOBS if size < len(rows) else 1  # the whole held-out set is one job
            drifted = columns = drifted_columns = 0
            for _ in range(trials):
                picked = rng.sample(range(len(rows)), size)
                sketch = DriftSketch.empty(profile)
                sketch.add([shifted[i] for i in picked], [outputs[i] for i in picked])
                section = evaluate(profile, sketch)
                drifted += section is not None and section["status"] == "drifted"
                if section is not None:  # each column's own verdict (the job drifts when half of them do)
                    columns += section["columns"]
                    drifted_columns += section["driftedColumns"]
            by_size[str(size)] = {
                "jobs": trials,
                "drifted": drifted,
                "rate": round(drifted / trials, 4),
                "columnRate": round(drifted_columns / max(1, columns), 4),
            }
        table[name] = by_size
    return {
        "model": MODEL,
        "reference": profile.get("reference"),
        "jobsFrom": f"the {len(rows)} held-out rows, sampled without replacement per job",
        "falsePositiveRate": table["clean"],
        "truePositiveRate": {k: v for k, v in table.items() if k != "clean"},
    }


def cost(model: str) -> dict[str, Any]:
    from workloads import WORKLOADS  # bench/workloads.py: the same rows the raw limit scores

    from shared.bootstrap import tune_gc_for_batch_work
    from shared.domain.drift import DriftSketch
    from shared.domain.jobs import Job, ShardMessage
    from shared.inference.readers import reader_for
    from shared.services.drift import ShardSketch
    from shared.services.shards import ComputeMeter, _pages

    work = next(w for w in WORKLOADS if w.model == model)
    _card, profile, predictor = package(model)
    data = list(work.make(COST_ROWS, "r"))
    job = Job("bench", "0" * 32, model, "1", "inbox/bench.jsonl", "etag", file_type=work.file_type)
    message = ShardMessage("bench", job.job_id, 0, 1)
    tune_gc_for_batch_work()

    def run(with_sketch: bool) -> tuple[float, int, int]:
        sketch = ShardSketch(DriftSketch.empty(profile), "bench") if with_sketch else None
        started = time.perf_counter()
        scored = 0
        for page in _pages(job, message, reader_for(work.file_type)(data), predictor, 1000, ComputeMeter(), sketch):
            scored += len(page.items)
        seconds = time.perf_counter() - started
        doc = sketch.to_doc() if sketch else None
        return seconds, scored, len(json.dumps(doc)) if doc else 0

    best = {False: float("inf"), True: float("inf")}
    scored = doc_bytes = 0
    for _ in range(REPEATS):
        for with_sketch in (False, True):
            seconds, scored, size = run(with_sketch)
            best[with_sketch] = min(best[with_sketch], seconds)
            doc_bytes = max(doc_bytes, size)
    without, with_ = scored / best[False], scored / best[True]
    return {
        "model": model,
        "rows": scored,
        "rowsPerSecondWithout": round(without),
        "rowsPerSecondWith": round(with_),
        "overheadPercent": round((best[True] / best[False] - 1) * 100, 1),
        "sketchDocBytes": doc_bytes,
    }


def main() -> int:
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    print(f"drift rates over {JOBS} jobs per size and shift...", flush=True)
    results["rates"] = rates()
    results["cost"] = []
    for model in COST_MODELS:
        print(f"drift sketch cost on {model} ({COST_ROWS:,} rows)...", flush=True)
        results["cost"].append(cost(model))
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    fpr = results["rates"]["falsePositiveRate"]
    print("false positive rate by job size:", {size: v["rate"] for size, v in fpr.items()})
    print("  per column:", {size: v["columnRate"] for size, v in fpr.items()})
    for shift, by_size in results["rates"]["truePositiveRate"].items():
        print(f"true positive rate ({shift}):", {size: v["rate"] for size, v in by_size.items()})
    for row in results["cost"]:
        print(
            f"{row['model']}: {row['rowsPerSecondWithout']:,} rows/s without, {row['rowsPerSecondWith']:,} with "
            f"({row['overheadPercent']}%), sketch {row['sketchDocBytes']:,} bytes"
        )
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
