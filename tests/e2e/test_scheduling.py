"""Scheduling on the local stack: one job's shards run on both workers at once, and tenants share the workers."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.localhost.host import LocalHost
from tests.e2e._api import upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TEXTS = [line for line in (REPO / "build/samples/texts.txt").read_text().splitlines() if line.strip()]
ROWS = (REPO / "build/samples/breast-cancer.jsonl").read_bytes().splitlines()
ZERO_SHOT = "zero-shot-text-classifier"  # 128 KiB shards of a few seconds each: a backlog that takes a while
# Documents of about 8 KB (200 sample texts each): the model reads the first 256 tokens of each, so a shard of 16
# of them takes a couple of seconds (16 x 256 tokens) where 3,000 one-line texts took ten (3,000 x 12 tokens).
TEXTS_PER_DOCUMENT = 200
LABELS = {"labels": ["sports", "finance"]}
INVOCATION = re.compile(
    r"^(?P<at>\S+ \S+) worker\[(?P<pid>\d+)\] .*(?P<what>Executing|Executed) run_shard \(messageId=(?P<id>[^,)]+)"
)


def _job_of(api: httpx.Client, blob_path: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in api.get("/v1/jobs").raise_for_status().json()["items"]:
            if job["input"]["blobPath"] == blob_path:
                return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no job for {blob_path}")


def _wait(api: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if done(job):
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}")


def _shard_runs(stack: LocalHost, job_id: str) -> list[tuple[int, datetime, datetime]]:
    """(worker pid, start, end) of every run of the job's shards, from the workers' invocation log lines."""
    started: dict[tuple[str, str], datetime] = {}
    runs = []
    for log in sorted((stack.settings.data_dir / "logs").glob("worker-*.log*")):
        for line in log.read_text(errors="replace").splitlines():
            match = INVOCATION.match(line)
            if not match or not match["id"].startswith(f"{job_id}:") or match["id"].endswith(":plan"):
                continue
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)  # logs: local time
            key = (match["pid"], match["id"])
            if match["what"] == "Executing":
                started[key] = at
            elif key in started:
                runs.append((int(match["pid"]), started.pop(key), at))
    return runs


def test_a_jobs_shards_run_on_both_workers_at_once_and_a_small_tenant_finishes_inside_a_big_backlog(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    assert stack.settings.tenant_max_shards_in_flight == len(stack.worker_processes) == 2
    big, small = create_tenant("fair-big"), create_tenant("fair-small")
    documents = (" ".join(TEXTS[(i + k) % len(TEXTS)] for k in range(TEXTS_PER_DOCUMENT)) for i in range(110))
    texts = "\n".join(documents).encode() + b"\n"  # 900 KB: 7 shards of 128 KiB
    big_job = _job_of(big, upload(big, ZERO_SHOT, "many.txt", texts, LABELS))
    # Planned and running: two of its shards are handed out (one per worker), the others wait their turn.
    _wait(big, big_job["jobId"], lambda j: j["shards"]["count"] >= 6 and j["status"] == "running", timeout=120)

    small_path = upload(small, "breast-cancer-classifier", "few.jsonl", b"\n".join(ROWS[:5]) + b"\n")
    small_job = _job_of(small, small_path)

    big_done = _wait(big, big_job["jobId"], lambda j: j["completedAt"] is not None, timeout=300)
    small_done = _wait(small, small_job["jobId"], lambda j: j["completedAt"] is not None, timeout=60)
    assert small_done["status"] == "succeeded" and big_done["status"] == "succeeded"
    assert small_done["completedAt"] < big_done["completedAt"]  # it ended while the big job still ran

    arrived = datetime.fromisoformat(small_job["createdAt"])
    # Its first run counts: on a loaded machine the sweeper may re-send a shard that sat queued past the e2e
    # stack's 10 s stall time (a harmless duplicate run, recorded once).
    small_runs = _shard_runs(stack, small_job["jobId"])
    assert small_runs, "the small job's shard ran"
    small_started = min(start for _, start, _ in small_runs)
    runs = _shard_runs(stack, big_job["jobId"])
    assert len([run for run in runs if run[1] > arrived]) >= 3, "the big tenant still had a backlog"
    # The newcomer's shard went before that backlog: at most the shards the big tenant had in flight (its limit,
    # one per worker) started between its arrival and its own start.
    overtaking = [run for run in runs if arrived < run[1] < small_started]
    assert len(overtaking) <= 2, (arrived, small_started, runs)

    assert len({pid for pid, _, _ in runs}) == 2, runs  # both workers ran shards of that one job
    overlapping = [(a, b) for a in runs for b in runs if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]]
    assert overlapping, runs  # two runs on different workers whose time spans cross
