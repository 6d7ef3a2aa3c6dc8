"""The tenant's `aiaas` commands, the real binary against the local stack: submit --wait exits, JSON, events tail,
subscriptions; and the SDK's own `aiaas`, installed alone from clients/python."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import all_results

REPO = Path(__file__).resolve().parents[2]
AIAAS = str(REPO / ".venv/bin/aiaas")
MODEL = "breast-cancer-classifier"
SAMPLE = REPO / "build/samples/breast-cancer.jsonl"

pytestmark = pytest.mark.e2e


class Tenant:
    """Runs `aiaas` as a tenant would: AIAAS_API_URL and AIAAS_API_KEY, no profile file."""

    def __init__(self, stack: LocalHost, api: httpx.Client, tmp: Path) -> None:
        self.api = api
        self.key = str(api.headers["Authorization"]).removeprefix("Bearer ")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIAAS_")},
            "AIAAS_API_URL": stack.api_url,
            "AIAAS_API_KEY": self.key,
            "AIAAS_PROFILE_FILE": str(tmp / "no-profile.toml"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([AIAAS, *args], env=self.env, capture_output=True, text=True, timeout=300)
        self.check_secret(done.stdout + done.stderr)
        return done

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def check_secret(self, text: str) -> None:
        assert self.key not in text, "the CLI printed the caller's own API key"


@pytest.fixture(scope="module")
def tenant(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client], tmp_path_factory: pytest.TempPathFactory
) -> Tenant:
    return Tenant(stack, create_tenant("clitenant"), tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("files")
    rows = SAMPLE.read_text().splitlines()[:20]
    good, broken = folder / "good.jsonl", folder / "with-broken-rows.jsonl"
    good.write_text("\n".join(rows) + "\n")
    row = json.loads(rows[3])
    del row["mean radius"]  # a record the model cannot score: it fails, the others succeed
    broken.write_text("\n".join([*rows[:3], json.dumps(row), *rows[4:]]) + "\n")
    return {"good": good, "broken": broken}


def test_submit_wait_exits_0_2_1_and_prints_json(tenant: Tenant, files: dict[str, Path]) -> None:
    done = tenant.run("jobs", "submit", str(files["good"]), "--model", MODEL, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)  # nothing but the finished job on stdout
    assert job["status"] == "succeeded" and job["counts"] == {"records": 20, "succeeded": 20, "failed": 0}

    done = tenant.run("jobs", "submit", str(files["broken"]), "--model", MODEL, "--wait", "--metadata", "team=risk")
    assert done.returncode == 2, done.stderr
    assert "partially_succeeded" in done.stdout + done.stderr and "1 of 20 records failed" in done.stderr

    done = tenant.run("jobs", "submit", str(files["good"]), "--model", "no-such-model", "--wait")
    assert done.returncode == 1
    assert "no-such-model" in done.stderr and done.stdout == ""


def test_list_show_results_and_usage(tenant: Tenant, files: dict[str, Path]) -> None:
    job = tenant.json("jobs", "submit", str(files["good"]), "--model", MODEL, "--wait")
    listed = tenant.json("jobs", "list")
    assert job["jobId"] in [j["jobId"] for j in listed]
    shown = tenant.json("jobs", "show", job["jobId"])
    assert shown["status"] == "succeeded" and shown["model"]["name"] == MODEL
    results = tenant.json("jobs", "results", job["jobId"], "--limit", "5")
    assert [r["recordIndex"] for r in results] == [0, 1, 2, 3, 4]
    assert results[0]["id"] == json.loads(files["good"].read_text().splitlines()[0])["id"]
    assert len(tenant.json("jobs", "results", job["jobId"], "--limit", "0")) == 20

    # The tables people read carry the same job.
    for args in (("jobs", "list"), ("jobs", "show", job["jobId"])):
        done = tenant.run(*args)
        assert done.returncode == 0 and job["jobId"] in done.stdout, done.stderr
    missing = tenant.run("jobs", "show", "0" * 32)
    assert missing.returncode == 1 and "404" in missing.stderr

    usage = tenant.json("usage", "--group-by", "model")
    assert usage["totals"]["jobs"] >= 1 and any(item["model"].startswith(f"{MODEL}@") for item in usage["items"])
    assert "concurrentJobs" in tenant.run("usage").stdout


def test_events_tail_follows_new_events_until_ctrl_c(tenant: Tenant, files: dict[str, Path]) -> None:
    tail = subprocess.Popen(
        [AIAAS, "events", "tail", "--json", "--interval", "0.5"],
        env=tenant.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in tail.stdout or []], daemon=True).start()
    try:
        job = tenant.json("jobs", "submit", str(files["good"]), "--model", MODEL, "--wait")
        while True:
            event = json.loads(lines.get(timeout=60))  # a line that is not JSON fails the test
            if event["data"].get("jobId") == job["jobId"]:
                break
        assert event["eventType"] == "AIaaS.Job.Succeeded"
        assert event["subject"].endswith(f"/jobs/{job['jobId']}")
    finally:
        tail.send_signal(signal.SIGINT)
        _, stderr = tail.communicate(timeout=30)
    assert tail.returncode == 0, stderr
    tenant.check_secret(stderr)


def test_tenant_keys_over_the_api_beside_the_operators(stack: LocalHost, tenant: Tenant) -> None:
    created = tenant.json("keys", "create", "--name", "ci-reader", "--role", "AIaaS.Reader")
    assert created["role"] == "AIaaS.Reader" and created["key"]  # the one key the CLI prints: the one it made
    listed = tenant.json("keys", "list")
    assert created["id"] in [k["id"] for k in listed] and all("key" not in k for k in listed)
    reader = {**tenant.env, "AIAAS_API_KEY": created["key"]}
    done = subprocess.run([AIAAS, "jobs", "list", "--json"], env=reader, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and created["key"] not in done.stdout + done.stderr
    # The operator's form, with the tenant named, reads the store directly.
    operator = subprocess.run(
        [AIAAS, "keys", "list", "clitenant"],
        env={**os.environ, **stack.environment()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert operator.returncode == 0 and created["id"] in operator.stdout, operator.stderr
    assert tenant.run("keys", "revoke", created["id"]).returncode == 0
    done = subprocess.run([AIAAS, "jobs", "list"], env=reader, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "401" in done.stderr


def test_a_waiting_submit_of_a_big_file_cancelled_elsewhere_exits_1(tenant: Tenant, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    # About 20 MB: several 4 MiB blocks to upload, and some eighty 256 KB shards (the stack's), two at a time:
    # still running when the cancel comes.
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({**rows[i % len(rows)], "id": f"row-{i}"}) + "\n" for i in range(30000)))
    submit = subprocess.Popen(
        [AIAAS, "jobs", "submit", str(big), "--model", MODEL, "--wait"],
        env=tenant.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job: dict[str, Any] = {}
        while not job:  # what the submit's upload made, found over the API in this process (no CLI start-up)
            assert submit.poll() is None, submit.communicate()
            listed = tenant.api.get("/v1/jobs", params={"limit": 5}).raise_for_status().json()["items"]
            job = next((j for j in listed if j["input"]["blobPath"].endswith("/big.jsonl")), {})
            time.sleep(0.2)
        assert job["status"] in ("queued", "running"), job
        cancelled = tenant.json("jobs", "cancel", job["jobId"])
        assert cancelled["jobId"] == job["jobId"]
        stdout, stderr = submit.communicate(timeout=300)
    finally:
        if submit.poll() is None:
            submit.kill()
    tenant.check_secret(stdout + stderr)
    assert submit.returncode == 1, stderr
    assert f"job {job['jobId']} cancelled" in stderr
    shown = tenant.json("jobs", "show", job["jobId"])
    assert shown["status"] == "cancelled" and shown["shards"]["done"] < shown["shards"]["count"]


def _table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in a command's output, cell by cell."""
    return [[cell.strip() for cell in line.split("│")] for line in text.splitlines() if "│" in line]


def test_jobs_errors_lists_exactly_the_failed_records_and_submit_shows_the_first(
    tenant: Tenant, tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:30]]
    lines = [json.dumps(row) for row in rows]
    broken = {1: "mean radius", 4: "mean area", 5: None, 11: "worst radius", 17: None, 22: "mean texture", 29: None}
    for index, feature in broken.items():
        lines[index] = json.dumps({**rows[index], feature: "n/a"}) if feature else f"not json {index}"
    path = tmp_path / "seven-broken.jsonl"
    path.write_text("\n".join(lines) + "\n")

    done = tenant.run("jobs", "submit", str(path), "--model", MODEL, "--wait")

    assert done.returncode == 2, done.stderr
    exit_line = re.search(r"job (\w+) partially_succeeded: ", done.stderr)
    assert exit_line, done.stderr
    job_id = exit_line[1]
    first = list(broken)[:5]
    assert [(r[0], r[2]) for r in _table_rows(done.stdout)] == [(str(i + 1), broken[i] or "") for i in first]
    assert "the first 5 of 7" in done.stdout and f"aiaas jobs errors {job_id}" in done.stdout

    # Pages of 3 records: the seven need three requests, and every one is listed once, in record order.
    listed = tenant.json("jobs", "errors", job_id, "--limit", "0", "--page-size", "3")
    expected_ids = [None if broken[i] is None else rows[i]["id"] for i in broken]
    assert [(e["recordIndex"], e["line"], e["id"], e["field"]) for e in listed] == [
        (i, i + 1, expected_ids[n], broken[i]) for n, i in enumerate(broken)
    ]
    assert all(
        ("not valid JSON" if broken[e["recordIndex"]] is None else "must be a number") in e["message"] for e in listed
    )
    assert listed == all_results(tenant.api, job_id, kind="errors")

    table = tenant.run("jobs", "errors", job_id, "--limit", "6", "--page-size", "4")
    assert table.returncode == 0, table.stderr
    shown = _table_rows(table.stdout)
    assert [r[0] for r in shown] == [str(i + 1) for i in list(broken)[:6]]
    assert all(r[3] == "InvalidRecord" and r[4] for r in shown)  # code and reason
    assert f"all of them: aiaas jobs errors {job_id} --limit 0" in table.stderr


def test_subscriptions_create_list_show_delete_a_webhook_and_a_callback(tenant: Tenant) -> None:
    secret = "cli-secret-0123456789"
    with WebhookReceiver() as hook:
        created = tenant.json(
            "subscriptions",
            "create",
            "--endpoint-url",
            hook.url,
            "--event-type",
            "AIaaS.Job.Failed",
            "--model-name",
            MODEL,
            "--secret",
            secret,
            "--max-delivery-attempts",
            "3",
        )
        assert any(r["headers"].get("aeg-event-type") == "SubscriptionValidation" for r in hook.requests)
    sub_id = created["subscriptionId"]
    assert created["kind"] == "webhook" and created["endpointUrl"] == hook.url
    assert created["eventTypes"] == ["AIaaS.Job.Failed"] and created["modelNames"] == [MODEL]
    assert created["hasSecret"] is True and secret not in json.dumps(created)
    # A callback (Logic Apps): no handshake, so nothing needs to listen at it.
    callback = tenant.json("subscriptions", "create", "--callback-url", "http://127.0.0.1:9/callback?sig=abc")
    assert callback["kind"] == "callback" and callback["callbackUrl"] == "http://127.0.0.1:9/callback"

    assert {sub_id, callback["subscriptionId"]} <= {s["subscriptionId"] for s in tenant.json("subscriptions", "list")}
    listed = tenant.run("subscriptions", "list")
    assert listed.returncode == 0 and sub_id in listed.stdout and "callback" in listed.stdout, listed.stderr
    assert tenant.json("subscriptions", "show", sub_id) == created
    shown = tenant.run("subscriptions", "show", sub_id)
    lines = {line.split(maxsplit=1)[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert shown.returncode == 0 and MODEL in lines["models"] and "set (never shown)" in lines["secret"]
    assert "3" in lines["max"] and secret not in shown.stdout

    both = tenant.run("subscriptions", "create", "--endpoint-url", hook.url, "--callback-url", hook.url)
    assert both.returncode == 1 and "one of them" in both.stderr
    for made in (sub_id, callback["subscriptionId"]):
        assert tenant.run("subscriptions", "delete", made).returncode == 0
    gone = tenant.run("subscriptions", "show", sub_id)
    assert gone.returncode == 1 and "404" in gone.stderr
    assert sub_id not in {s["subscriptionId"] for s in tenant.json("subscriptions", "list")}


def test_submit_wait_of_a_file_the_platform_refuses_exits_1_with_the_reason(tenant: Tenant, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("a text, not the features this model scores\n")
    done = tenant.run("jobs", "submit", str(text), "--model", MODEL, "--wait")
    assert done.returncode == 1 and done.stdout == ""
    assert "UnsupportedFileType (400)" in done.stderr and "not .txt" in done.stderr, done.stderr

    # Accepted by name, refused by the model: a .png that is no image. Every record failed: the platform's reason,
    # then the command that lists the failed records.
    fake = tmp_path / "scan.png"
    fake.write_bytes(b"this is text")
    done = tenant.run("jobs", "submit", str(fake), "--model", "digits-classifier", "--wait")
    assert done.returncode == 1, done.stderr
    exit_line = re.search(r"job (\w+) failed: AllRecordsFailed: .*not an image.*", done.stderr)
    assert exit_line, done.stderr
    assert exit_line[0].endswith(f"(failed records: `aiaas jobs errors {exit_line[1]}`)")


def test_the_sdk_alone_installs_an_aiaas_with_the_tenants_commands(tmp_path: Path) -> None:
    """`pip install ./clients/python` into a folder of its own, offline; its CLI runs with typer and rich only
    (the venv's site-packages without the editable installs: no `shared`, no working-tree SDK)."""
    source = tmp_path / "src"
    # A copy: the build writes egg-info and build/ beside its sources, never into the working tree.
    shutil.copytree(REPO / "clients/python", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    target = tmp_path / "target"
    offline = ["--no-deps", "--no-index", "--no-build-isolation", "-q"]  # the venv's setuptools builds it
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", *offline, "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    dist = next(target.glob("aiaas_client-*.dist-info"))
    assert "aiaas = aiaas_client.cli:main" in (dist / "entry_points.txt").read_text()
    requires = [line for line in (dist / "METADATA").read_text().splitlines() if line.startswith("Requires-Dist:")]
    assert any(line.startswith("Requires-Dist: typer") and 'extra == "cli"' in line for line in requires), requires
    assert (target / "bin/aiaas").is_file()

    probe = """
import importlib.util, json, runpy, sys
sys.argv = ["aiaas", *sys.argv[1:]]
try:
    runpy.run_module("aiaas_client.cli", run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code
import aiaas_client.cli
code_main = aiaas_client.cli.main(["jobs", "--help"])
print(json.dumps({
    "code": code, "codeMain": code_main, "file": aiaas_client.cli.__file__,
    "shared": sorted(m for m in sys.modules if m == "shared" or m.startswith("shared.")),
    "sharedFindable": importlib.util.find_spec("shared") is not None,
}), file=sys.stderr)
"""
    site = sysconfig.get_paths()["purelib"]  # typer, rich, httpx, pydantic; -S: no .pth, so no editable installs
    ran = subprocess.run(
        [sys.executable, "-S", "-c", probe, "--help"],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([str(target), site]), "NO_COLOR": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(ran.stderr.strip().splitlines()[-1])
    assert report["code"] == 0 and report["codeMain"] == 0, ran.stderr
    assert report["file"].startswith(str(target)) and report["shared"] == [] and not report["sharedFindable"]
    listing = ran.stdout
    for command in ("jobs", "events", "usage", "subscriptions", "keys", "submit", "errors"):
        assert command in listing, listing
    assert "come with the platform" in " ".join(listing.split())
    assert "tenants" not in listing.replace("aiaas up, tenants, models", "")
