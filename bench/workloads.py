"""The bench's workloads: records for each built-in model, made in blocks, and the raw limit of each model."""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from shared.localhost.demo import ZERO_SHOT_LABELS

REPO = Path(__file__).resolve().parents[1]
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
    """One built-in model, the file type its records come in, how to make `count` of them, and the bench's sizes:
    `raw_rows` for the raw limit, `scaling_rows` for the 1-vs-2-worker runs (each env-overridable)."""

    model: str
    file_type: str
    make: Callable[[int, str], Iterator[bytes]]
    raw_rows: int
    scaling_rows: int
    parameters: dict[str, Any] = field(default_factory=dict)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


_SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "1000,100000,1000000").split(",")]
TEXT_ROWS = _env_int("BENCH_TEXT_ROWS", 20000)
TABULAR = Workload("breast-cancer-classifier", ".jsonl", rows, 200_000, min(max(_SIZES), 200_000))
TEXT = Workload("text-embedding", ".txt", _texts, 3000, TEXT_ROWS)
WORKLOADS = [
    TABULAR,
    Workload(
        "transaction-anomaly-detector",
        ".jsonl",
        lambda n, p: _jsonl_rows("transactions.jsonl", n, p),
        200_000,
        min(max(_SIZES), 200_000),
    ),
    Workload("digits-classifier", ".zip", _digits_zip, 5000, _env_int("BENCH_DIGITS_IMAGES", 10_000)),
    TEXT,
    Workload(
        "zero-shot-text-classifier",
        ".jsonl",
        lambda n, p: _jsonl_rows("zero-shot.jsonl", n, p),
        2000,
        _env_int("BENCH_ZERO_SHOT_ROWS", 3000),
        {"labels": ZERO_SHOT_LABELS},
    ),
]


def package_dir(model: str) -> Path:
    """The built package of a model's first version (what `make models` publishes)."""
    return REPO / "build/models" / model / "1"


def raw_limit(work: Workload) -> dict[str, Any]:
    """Parse + model in one process, no I/O: the physical limit the pipeline is measured against."""
    from shared.bootstrap import tune_gc_for_batch_work
    from shared.domain.models import ModelCard
    from shared.inference.readers import reader_for
    from shared.inference.registry import build_predictor

    package = package_dir(work.model)
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
