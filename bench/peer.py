"""The peer run side by side: Ray Data over the same rows and model, in .venv-bench, as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from workloads import REPO, TABULAR, package_dir, rows

RAY_PYTHON = REPO / ".venv-bench/bin/python"
RAY_ROWS = int(os.environ.get("BENCH_RAY_ROWS", "1000000"))
RAY_TIMEOUT = int(os.environ.get("BENCH_RAY_TIMEOUT", "900"))


def ray_data(count: int = RAY_ROWS) -> dict[str, Any]:
    """Ray Data reads `count` breast-cancer rows (the pipeline's own file, byte for byte), scores them, writes JSON."""
    if not RAY_PYTHON.exists():
        return {"skipped": "no .venv-bench: `make bench` installs requirements-bench.txt there"}
    work = Path(tempfile.mkdtemp(prefix="aiaas-ray-"))
    try:
        source = work / "rows.jsonl"
        with source.open("wb") as out:
            for chunk in rows(count):
                out.write(chunk)
        started = time.perf_counter()
        answer = subprocess.run(
            [
                str(RAY_PYTHON),
                str(REPO / "bench/ray_peer.py"),
                "--input",
                str(source),
                "--package",
                str(package_dir(TABULAR.model)),
                "--output",
                str(work / "out"),
            ],
            capture_output=True,
            text=True,
            timeout=RAY_TIMEOUT,
            cwd=work,
            env={**os.environ, "RAY_TMPDIR": str(work / "ray")},
        )
        wall = time.perf_counter() - started
        if answer.returncode != 0:
            return {"failed": answer.returncode, "stderrTail": answer.stderr[-2000:]}
        result: dict[str, Any] = json.loads(answer.stdout.strip().splitlines()[-1])
        result["inputBytes"] = source.stat().st_size
        result["processSeconds"] = round(wall, 2)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
