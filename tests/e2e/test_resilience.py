"""Scale and failure on the local stack: sharded files, a lost message the sweeper re-drives, killed processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bootstrap import get_platform
from shared.domain.jobs import Job, JobStatus
from shared.domain.models import ModelRef
from shared.localhost.host import HEALTHY_UPTIME_SECONDS, LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import all_results, breast_cancer_jsonl, upload

# A job id of the platform's form (32 hex digits): the API refuses any other before it reaches a store.
LOST_JOB_ID = "10575000000000000000000000000000"

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
ROWS = [json.loads(line) for line in (REPO / "build/samples/breast-cancer.jsonl").read_text().splitlines()]
FEATURES = [k for k in ROWS[0] if k not in {"id", "expected"}]
MODEL = "breast-cancer-classifier"
MIN_KILLS = 12  # of workers, in test_killed_workers_lose_and_duplicate_nothing


def _sigkill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILLs a child of the host from outside, as `kill -9` or the OOM killer would; False if it had ended.

    Through a pidfd taken while the child is known alive, so a pid the kernel reused can never be hit.
    """
    if process.poll() is not None:
        return False
    pidfd = os.pidfd_open(process.pid)
    try:
        if process.poll() is not None:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)
    return True


def _wait_for_new_workers(stack: LocalHost, killed: set[int], timeout: float = 120) -> list[int]:
    """The pids of a full set of live workers none of which is one of `killed` (the supervisor's replacements)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes = list(stack.worker_processes)
        if processes and all(p.poll() is None and p.pid not in killed for p in processes):
            return [p.pid for p in processes]
        time.sleep(0.1)
    raise AssertionError(f"the killed workers {sorted(killed)} were not replaced")


def test_a_big_file_runs_as_several_shards_in_record_order(create_tenant: Callable[[str], httpx.Client]) -> None:
    api = create_tenant("bigfile")
    rows = 3000  # about 2.4 MB: ten shards of 256 KB on this stack
    broken = {2600: b'{"id": "late-broken", "mean radius": null}'}
    csv_rows = ["id," + ",".join(f'"{f}"' for f in FEATURES)]
    csv_rows += [f"c-{i}," + ",".join(str(ROWS[i % len(ROWS)][f]) for f in FEATURES) for i in range(2000)]
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        upload(api, MODEL, "big.jsonl", breast_cancer_jsonl("big", rows, broken))
        upload(api, MODEL, "big.csv", ("\n".join(csv_rows) + "\n").encode())
        events = hook.wait_for(2, timeout=120)
    by_name = {e["data"]["input"]["blobPath"].rsplit("/", 1)[-1]: e["data"] for e in events}

    big = by_name["big.jsonl"]
    assert big["counts"] == {"records": rows, "succeeded": rows - 1, "failed": 1}
    job = get_platform().jobs.get_job("bigfile", big["jobId"])
    assert job.shard_count >= 8, "the file was split into shards"
    results = all_results(api, big["jobId"], limit=5000)
    assert [r["recordIndex"] for r in results] == [i for i in range(rows) if i != 2600]
    assert [r["id"] for r in results] == [f"big-{i}" for i in range(rows) if i != 2600]
    errors = get_platform().blobs.read_bytes("tenant-bigfile", f"outbox/{big['jobId']}/errors.jsonl")
    [error] = [json.loads(line) for line in errors.splitlines()]
    assert (error["line"], error["recordIndex"], error["id"], error["field"]) == (
        2601,
        2600,
        "late-broken",
        FEATURES[0],
    )

    csv = by_name["big.csv"]
    assert csv["counts"] == {"records": 2000, "succeeded": 2000, "failed": 0}
    assert get_platform().jobs.get_job("bigfile", csv["jobId"]).shard_count >= 2
    assert [r["id"] for r in all_results(api, csv["jobId"], limit=5000)] == [f"c-{i}" for i in range(2000)]


def test_the_sweeper_re_drives_a_job_whose_message_was_lost(create_tenant: Callable[[str], httpx.Client]) -> None:
    api = create_tenant("lostmsg")
    platform = get_platform()
    content = breast_cancer_jsonl("lost", 40)
    etag = platform.blobs.write_bytes("tenant-lostmsg", "data/lost.jsonl", content)
    card = platform.models.resolve("lostmsg", ModelRef(MODEL))
    job = Job(
        tenant_id="lostmsg",
        job_id=LOST_JOB_ID,
        model_name=MODEL,
        model_version=card.version,
        blob_path="data/lost.jsonl",
        etag=etag,
        status=JobStatus.RUNNING,
        file_type=".jsonl",
        content_length=len(content),
        updated_at="2020-01-01T00:00:00.000Z",
        dispatched=1,  # handed to the queue (its shard is in flight), and the message never arrived
    )
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        assert platform.jobs.create_job(job)  # a job whose queue message never arrived
        [event] = hook.wait_for(1, timeout=60)
    assert event["data"]["jobId"] == LOST_JOB_ID and event["eventType"] == "AIaaS.Job.Succeeded"
    assert platform.jobs.get_job("lostmsg", LOST_JOB_ID).sweeps == 1
    assert len(all_results(api, LOST_JOB_ID, limit=5000)) == 40


def test_killed_workers_lose_and_duplicate_nothing(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    """At least 12 SIGKILLs of worker processes over at least 100 files from three tenants.

    Each kill waits for a worker that has run HEALTHY_UPTIME_SECONDS (else the host backs off as for a crash loop),
    so with the stack's two workers every two kills cost about 6 s: the 20 kills this test once made took over a
    minute, 12 take about 40 s and still land at random points of shards, plans and finalisations.
    """
    rng = random.Random(7)
    tenants = {name: create_tenant(name) for name in ("crash-a", "crash-b", "crash-c")}
    plan = []  # (tenant, filename, rows)
    for k in range(105):
        rows = rng.choice([50, 120, 400, 900]) if k % 7 else 1800  # every 7th spans several shards
        plan.append((f"crash-{'abc'[k % 3]}", f"f{k:03d}.jsonl", rows))
    hooks = {name: WebhookReceiver() for name in tenants}
    for name, hook in hooks.items():
        hook.__enter__()
        tenants[name].post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
    uploaded: dict[str, tuple[str, int]] = {}

    def upload_in_waves() -> None:
        for start in range(0, len(plan), 15):
            for tenant, filename, rows in plan[start : start + 15]:
                path = upload(tenants[tenant], MODEL, filename, breast_cancer_jsonl(f"{tenant}-{filename}", rows))
                uploaded[path] = (tenant, rows)
            time.sleep(1.0)

    uploader = threading.Thread(target=upload_in_waves)
    uploader.start()
    kills = 0
    first_seen: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 300
        while (kills < MIN_KILLS or uploader.is_alive()) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 0.7))
            now = time.monotonic()
            for process in stack.worker_processes:
                first_seen.setdefault(process.pid, now)
            # A worker killed soon after its start is taken for a crash loop and waits longer each time; the
            # kills here hit workers that ran a while, so the host replaces each after its first short delay.
            settled = [p for p in stack.worker_processes if now - first_seen[p.pid] >= HEALTHY_UPTIME_SECONDS]
            if settled and _sigkill(rng.choice(settled)):  # the host's supervisor starts a fresh worker
                kills += 1
        uploader.join()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if len({e["data"]["jobId"] for h in hooks.values() for e in h.events}) >= len(plan):
                break
            time.sleep(0.5)
        time.sleep(3)  # late duplicates, if any, would arrive now
    finally:
        for hook in hooks.values():
            hook.__exit__(None, None, None)

    assert kills >= MIN_KILLS and len(uploaded) == len(plan) >= 100
    # Delivery is at least once: a worker killed after the publish but before it was recorded makes the
    # sweeper publish the same event (same id) again, and consumers dedupe on the id (CONTRACT.md).
    events_per_job: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
    job_of_path: dict[str, dict[str, Any]] = {}
    for hook in hooks.values():
        for event in hook.events:
            events_per_job[event["data"]["jobId"]].add((event["id"], event["eventType"]))
            job_of_path[event["data"]["input"]["blobPath"]] = event
    assert set(job_of_path) == set(uploaded), "every job reached a terminal state"
    several = {job: sorted(ids) for job, ids in events_per_job.items() if len(ids) != 1}
    assert not several, f"exactly one terminal event per job: {several}"
    # Raw deliveries are counted too: a repeat of an id needs a kill inside the few milliseconds between a
    # publish and its record, so there can be no more repeats than kills (in practice there are none or one).
    raw = sum(len(hook.events) for hook in hooks.values())
    assert raw - len(events_per_job) <= kills, f"{raw} deliveries of {len(events_per_job)} events"
    lost, duplicated = 0, 0
    statuses: Counter[str] = Counter()
    for path, event in job_of_path.items():
        tenant, rows = uploaded[path]
        statuses[event["eventType"]] += 1
        indices = Counter(r["recordIndex"] for r in all_results(tenants[tenant], event["data"]["jobId"], limit=5000))
        lost += sum(1 for i in range(rows) if i not in indices)
        duplicated += sum(n - 1 for n in indices.values())
        assert event["data"]["counts"] == {"records": rows, "succeeded": rows, "failed": 0}
    assert statuses == {"AIaaS.Job.Succeeded": len(plan)}
    assert (lost, duplicated) == (0, 0)
    per_tenant: defaultdict[str, int] = defaultdict(int)
    for tenant, _ in uploaded.values():
        per_tenant[tenant] += 1
    assert {name: len({e["id"] for e in h.events}) for name, h in hooks.items()} == dict(per_tenant)


def test_a_job_finishes_after_every_worker_was_killed_twice_in_a_row(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("killall")
    rows = 6000  # about 5 MB: twenty shards, so the job is still running when its workers die
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        upload(api, MODEL, "many.jsonl", breast_cancer_jsonl("many", rows))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = api.get("/v1/jobs").raise_for_status().json()["items"]
            if jobs and jobs[0]["status"] == "running":
                break
            time.sleep(0.1)
        assert jobs and jobs[0]["status"] == "running"
        killed: set[int] = set()
        for _ in range(2):  # the second round hits the replacements while they are still starting
            victims = {p.pid for p in list(stack.worker_processes) if _sigkill(p)}
            assert victims, "there were live workers to kill"
            killed |= victims
            _wait_for_new_workers(stack, killed)
        [event] = hook.wait_for(1, timeout=300)
    assert event["eventType"] == "AIaaS.Job.Succeeded"
    assert event["data"]["counts"] == {"records": rows, "succeeded": rows, "failed": 0}
    indices = [r["recordIndex"] for r in all_results(api, event["data"]["jobId"], limit=5000)]
    assert indices == list(range(rows)), "no record lost or duplicated"


# Azurite writes its metadata (LokiJS) to its data dir every 5 s (autosaveInterval: 5000 in
# node_modules/azurite/dist/src/*/persistence/Loki*MetadataStore.js): a SIGKILL loses at most that much.
AZURITE_AUTOSAVE_SECONDS = 5
AZURITE_BLOB_METADATA = "__azurite_db_blob__.json"  # the blob service's LokiJS file in its --location


def _wait_for_azurite_save(stack: LocalHost, since: float) -> None:
    """Waits until Azurite saved its blob metadata after `since` (a time.time()), at most one autosave period and
    a second: a save that late holds every blob written before `since`; if none comes, nothing was left unsaved
    (the metadata is saved only when it changed), so the last save already held them."""
    metadata = stack.azurite.data_dir / AZURITE_BLOB_METADATA
    deadline = time.monotonic() + AZURITE_AUTOSAVE_SECONDS + 1
    while time.monotonic() < deadline and metadata.stat().st_mtime <= since:
        time.sleep(0.1)


def test_a_killed_azurite_comes_back_on_its_ports_with_its_blobs(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    api = create_tenant("azkill")
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        upload(api, MODEL, "before.jsonl", breast_cancer_jsonl("before", 300))
        [before] = hook.wait_for(1, timeout=120)
        _wait_for_azurite_save(stack, since=time.time())  # past Azurite's save of everything written so far
        old_pid = stack.azurite.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (stack.azurite.running and stack.azurite.pid != old_pid):
            time.sleep(0.1)
        assert stack.azurite.running and stack.azurite.pid != old_pid, "Azurite was started again"
        # A started process is not yet a listening one (seconds on a loaded machine): wait for what an operator
        # watches, the platform's readiness (Blob, Cosmos and the queue answering), before reading through it.
        while time.monotonic() < deadline and api.get("/health/ready").status_code != 200:
            time.sleep(0.2)
        assert api.get("/health/ready").status_code == 200, "the platform is ready again once Azurite is back"

        outbox = get_platform().blobs.read_bytes("tenant-azkill", f"outbox/{before['data']['jobId']}/results.jsonl")
        assert len(outbox.splitlines()) == 300, "the blobs written before the crash are still there"
        upload(api, MODEL, "after.jsonl", breast_cancer_jsonl("after", 300))
        events = hook.wait_for(2, timeout=180)
    assert [e["data"]["input"]["blobPath"].rsplit("/", 1)[-1] for e in events] == ["before.jsonl", "after.jsonl"]
    assert [e["eventType"] for e in events] == ["AIaaS.Job.Succeeded"] * 2
    assert [r["id"] for r in all_results(api, events[1]["data"]["jobId"], limit=5000)] == [
        f"after-{i}" for i in range(300)
    ]
