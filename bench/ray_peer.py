"""The peer: Ray Data reads the bench's JSONL rows, scores them with the same ONNX model and writes JSON lines.

Run by bench/run.py as a subprocess in .venv-bench (ray is a bench-only dependency: requirements-bench.txt);
prints one JSON object with its figures on its last line. Only loopback is used: usage stats and the dashboard are
off and the node address is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Before ray is imported: no usage report leaves the machine, and no warning about a container's CPU quota.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")


class Scorer:
    """A Ray actor: one ONNX Runtime session per actor, the tabular classifier's outputs (label + probabilities),
    computed as shared/inference/predictors.py's TabularClassifier does, vectorised over a batch of columns."""

    def __init__(self, package: str) -> None:
        import onnxruntime

        card = json.loads((Path(package) / "card.json").read_text())
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # two actors on two cores: one thread each, as the workers do
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        model = (Path(package) / card["artifact"]["file"]).read_bytes()
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.features: list[str] = list(card["features"])
        self.labels: list[str] = list(card["labels"])
        self.input = card["onnx"]["inputName"]
        self.output = card["onnx"]["probabilitiesOutput"]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        matrix = np.column_stack([np.asarray(batch[name], dtype=np.float32) for name in self.features])
        probabilities = self.session.run([self.output], {self.input: matrix})[0].round(6)
        best = probabilities.argmax(axis=1)
        out: dict[str, Any] = {"id": batch["id"], "label": np.asarray(self.labels, dtype=object)[best]}
        for index, label in enumerate(self.labels):
            out[f"p_{label}"] = probabilities[:, index]
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="a JSONL file of rows")
    parser.add_argument("--package", required=True, help="the model package directory (card.json + model.onnx)")
    parser.add_argument("--output", required=True, help="a directory for write_json")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)  # the platform's batch size
    parser.add_argument("--object-store-mb", type=int, default=2048)
    args = parser.parse_args()

    import ray

    started = time.perf_counter()
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=args.object_store_mb * 1024 * 1024,
        log_to_driver=False,
        configure_logging=True,
        logging_level="WARNING",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    ready = time.perf_counter()
    try:
        # lines=True streams the file in chunks (pandas); without it Ray reads the whole file into one buffer.
        dataset = ray.data.read_json(args.input, lines=True)
        scored = dataset.map_batches(
            Scorer,
            fn_constructor_args=(args.package,),
            batch_size=args.batch_size,
            batch_format="numpy",
            # Half a CPU each: with a whole CPU per actor, two actors take both cores and the read task starves.
            num_cpus=0.5,
            compute=ray.data.ActorPoolStrategy(size=args.actors),
        )
        scored.write_json(args.output)
        done = time.perf_counter()
    finally:
        ray.shutdown()
    written = 0
    for part in Path(args.output).glob("*.json"):
        with part.open("rb") as lines:
            written += sum(1 for _ in lines)
    seconds = done - ready
    print(
        json.dumps(
            {
                "rows": written,
                "initSeconds": round(ready - started, 2),
                "seconds": round(seconds, 2),
                "rowsPerSecond": round(written / seconds) if seconds else 0,
                "ray": ray.__version__,
                "cpus": args.cpus,
                "actors": args.actors,
                "actorCpus": 0.5,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
