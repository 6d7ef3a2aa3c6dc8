"""The tenant's `aiaas` commands (aiaas_client/cli.py) over a fake SDK client: dispatch, credentials, output, exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiaas_client import (
    ApiKey,
    DeadLetter,
    Event,
    Job,
    NotFoundError,
    RecordError,
    Redelivery,
    Result,
    Subscription,
    Usage,
)
from aiaas_client import cli as client_cli
from packaging.requirements import Requirement

from shared import cli

REPO = Path(__file__).resolve().parents[2]

KEY = "aiaas_tenantsecret_0123456789abcdef"
NEW_KEY = "aiaas_brandnewsecret_fedcba9876543210"
ERROR_HEADER = ["line", "id", "field", "code", "reason"]


def job(status: str, **extra: Any) -> Job:
    return Job.model_validate(
        {
            "jobId": "job-1",
            "status": status,
            "model": {"name": "breast-cancer", "version": "1"},
            "input": {"blobPath": "tenant-t/inbox/breast-cancer/x/f.jsonl"},
            "counts": {"records": 3, "succeeded": 3 if status == "succeeded" else 2, "failed": 0},
            "shards": {"count": 1, "done": 1},
            **extra,
        }
    )


class FakeJobs:
    def __init__(self, outer: FakeClient) -> None:
        self.outer = outer

    def list(self, *, limit: int | None = None) -> Iterator[Job]:
        for i in range(5):
            yield job("succeeded", jobId=f"job-{i}")

    def get(self, job_id: str) -> Job:
        if job_id != "job-1":
            raise NotFoundError("no job named that", status=404, code="JobNotFound")
        return self.outer.final

    def results(self, job_id: str, *, limit: int | None = None) -> Iterator[Result]:
        for i in range(3):
            yield Result.model_validate({"recordIndex": i, "id": f"r{i}", "output": {"label": "benign"}})

    def errors(self, job_id: str, *, limit: int | None = None) -> Iterator[RecordError]:
        """Seven failed records, the first without an id, as the API pages them."""
        self.outer.error_pages.append(limit)
        if job_id != "job-1":
            raise NotFoundError("no job named that", status=404, code="NotFound")
        for i in range(7):
            yield RecordError.model_validate(
                {
                    "recordIndex": i * 3,
                    "line": i * 3 + 1,
                    "id": f"row-{i}" if i else None,
                    "field": "mean radius",
                    "code": "InvalidRecord",
                    "message": f"reason {i}",
                }
            )

    def cancel(self, job_id: str) -> Job:
        return job("cancelled")


class FakeEvents:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.started = datetime.now(UTC)

    def list(self, *, since: str | None = None, type: str | None = None) -> Iterator[Event]:
        self.calls.append({"since": since, "type": type})
        if len(self.calls) > 2:
            raise KeyboardInterrupt  # the user's Ctrl-C, after two polls
        # An event published after the tail started, on both polls (the look-back overlaps): shown once; one
        # from before the tail is not asked for.
        for event_id, moment in (
            ("ev-0", self.started - timedelta(hours=1)),
            ("ev-1", self.started + timedelta(seconds=5)),
        ):
            if since is None or client_cli.iso(moment) >= since:
                yield Event.model_validate(
                    {
                        "id": event_id,
                        "eventType": "AIaaS.Job.Succeeded",
                        "subject": "/tenants/t/jobs/job-1",
                        "eventTime": client_cli.iso(moment),
                        "data": {"status": "succeeded"},
                    }
                )


class FakeUsage:
    def get(self, *, start: str | None = None, end: str | None = None, group_by: str = "model") -> Usage:
        return Usage.model_validate(
            {
                "items": [{"model": "breast-cancer", "jobs": 2, "records": 10, "succeeded": 9, "failed": 1}],
                "totals": {"jobs": 2, "records": 10, "succeeded": 9, "failed": 1},
                "quota": {"concurrentJobs": {"limit": 4, "used": 0, "remaining": 4}},
            }
        )


class FakeKeys:
    def create(self, name: str, role: str = "AIaaS.Submitter") -> ApiKey:
        return ApiKey.model_validate({"id": "k2", "name": name, "role": role, "key": NEW_KEY})

    def list(self) -> list[ApiKey]:
        return [ApiKey.model_validate({"id": "k1", "name": "admin", "role": "AIaaS.Admin"})]

    def revoke(self, key_id: str) -> None:
        pass


class FakeSubscriptions:
    def __init__(self) -> None:
        self.created: dict[str, Any] = {}
        self.redelivered: dict[str, Any] = {}

    def create(self, endpoint_url: str | None = None, **options: Any) -> Subscription:
        self.created = {"endpoint_url": endpoint_url, **options}
        url = endpoint_url or options["callback_url"]
        return Subscription.model_validate(
            {
                "subscriptionId": "s1",
                "kind": "webhook" if endpoint_url else "callback",
                "endpointUrl" if endpoint_url else "callbackUrl": url.split("?")[0],
                "eventTypes": options["event_types"] or ["AIaaS.Job.Succeeded"],
                "modelNames": options["model_names"],
                "hasSecret": options["secret"] is not None,
            }
        )

    def list(self) -> list[Subscription]:
        return [Subscription.model_validate({"subscriptionId": "s1", "endpointUrl": "https://hooks.example/x"})]

    def get(self, subscription_id: str) -> Subscription:
        if subscription_id != "s1":
            raise NotFoundError("no subscription named that", status=404, code="NotFound")
        return Subscription.model_validate(
            {
                "subscriptionId": "s1",
                "kind": "webhook",
                "endpointUrl": "https://hooks.example/x",
                "schema": "CloudEventSchemaV1_0",
                "eventTypes": ["AIaaS.Job.Failed"],
                "modelNames": ["breast-cancer"],
                "retryPolicy": {"maxDeliveryAttempts": 5, "eventTimeToLiveInMinutes": 60},
                "hasSecret": True,
                "createdAt": "2026-12-01T10:00:00Z",
            }
        )

    def delete(self, subscription_id: str) -> None:
        pass

    def dead_letters(self, subscription_id: str, *, limit: int | None = None) -> Iterator[DeadLetter]:
        yield DeadLetter.model_validate(
            {
                "event": {"id": "ev-9", "eventType": "AIaaS.Job.Failed"},
                "deadLetterReason": "UndeliverableDueToClientError",
                "deliveryAttempts": 1,
                "lastHttpStatusCode": 400,
            }
        )

    def redeliver(self, subscription_id: str, **options: Any) -> Redelivery:
        self.redelivered = options
        return Redelivery.model_validate({"subscriptionId": subscription_id, "events": 1})


class FakeClient:
    """What the commands use of aiaas_client.Client; answers are the SDK's own models."""

    def __init__(self, final: Job) -> None:
        self.final = final
        self.jobs = FakeJobs(self)
        self.events = FakeEvents()
        self.usage = FakeUsage()
        self.keys = FakeKeys()
        self.subscriptions = FakeSubscriptions()
        self.submitted: dict[str, Any] = {}
        self.error_pages: list[int | None] = []

    def submit_file(self, path: Path, model: str, **options: Any) -> Job:
        self.submitted = {"path": path, "model": model, **options}
        if model == "nope":
            raise NotFoundError("no model named 'nope' is available to you", status=404, code="UnknownModel")
        options["on_progress"](10, 10)
        options["on_update"](job("running"))
        if model == "slow":
            raise KeyboardInterrupt  # the user's Ctrl-C while it waits
        return self.final if options["wait"] else job("queued")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeClient:
    monkeypatch.setenv("AIAAS_API_URL", "http://127.0.0.1:1/api")
    monkeypatch.setenv("AIAAS_API_KEY", KEY)
    monkeypatch.setenv("AIAAS_PROFILE_FILE", str(tmp_path / "none.toml"))
    monkeypatch.delenv("AIAAS_PROFILE", raising=False)
    made = FakeClient(job("succeeded"))
    monkeypatch.setattr(client_cli, "client", lambda profile: made)
    monkeypatch.setattr(client_cli, "TAIL_INTERVAL_SECONDS", 0.0)
    return made


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err  # never the caller's own key
    return code, captured.out, captured.err


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a"}\n')
    return path


@pytest.mark.parametrize(
    ("status", "exit_code"), [("succeeded", 0), ("partially_succeeded", 2), ("failed", 1), ("cancelled", 1)]
)
def test_submit_wait_exits_by_the_jobs_end(
    fake: FakeClient, upload: Path, capsys: pytest.CaptureFixture[str], status: str, exit_code: int
) -> None:
    fake.final = job(
        status, error={"code": "TooManyErrors", "message": "3 of 3 failed"} if status == "failed" else None
    )
    code, out, err = run(capsys, "jobs", "submit", str(upload), "--model", "breast-cancer", "--wait", "--json")
    assert code == exit_code
    assert json.loads(out)["status"] == status  # nothing but the job on stdout
    if status == "failed":
        assert "TooManyErrors: 3 of 3 failed" in err


def test_submit_sends_metadata_and_without_wait_returns_the_queued_job(
    fake: FakeClient, upload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "jobs", "submit", str(upload), "-m", "breast-cancer", "--metadata", "team=risk", "--json"
    )
    assert code == 0
    assert json.loads(out)["status"] == "queued"
    assert fake.submitted["metadata"] == {"team": "risk"} and fake.submitted["wait"] is False


def test_submit_refused_prints_the_reason_and_exits_1(
    fake: FakeClient, upload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "jobs", "submit", str(upload), "--model", "nope", "--wait")
    assert code == 1 and out == ""
    assert "UnknownModel (404): no model named 'nope'" in err


def test_ctrl_c_while_waiting_leaves_the_job_running_and_says_how_to_follow_it(
    fake: FakeClient, upload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "jobs", "submit", str(upload), "--model", "slow", "--wait")
    assert code == 130 and out == ""
    assert "job job-1 goes on: aiaas jobs show job-1" in err


def test_bad_metadata_is_refused_before_anything_is_sent(
    fake: FakeClient, upload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "jobs", "submit", str(upload), "--model", "m", "--metadata", "novalue")
    assert code == 1 and "--metadata takes key=value" in err
    assert fake.submitted == {}


def test_list_show_results_json_and_tables(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "jobs", "list", "--limit", "2", "--json")
    assert code == 0 and [j["jobId"] for j in json.loads(out)] == ["job-0", "job-1"]
    code, out, _ = run(capsys, "jobs", "show", "job-1", "--json")
    assert json.loads(out)["counts"]["records"] == 3
    code, out, _ = run(capsys, "jobs", "results", "job-1", "--json")
    assert [r["recordIndex"] for r in json.loads(out)] == [0, 1, 2]
    code, out, _ = run(capsys, "jobs", "results", "job-1")
    assert code == 0 and "benign" in out and "r2" in out
    code, out, err = run(capsys, "jobs", "show", "job-9")
    assert code == 1 and "JobNotFound" in err


def test_errors_lists_the_failed_records_as_a_table_or_json(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "jobs", "errors", "job-1")
    assert code == 0 and err == ""
    rows = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "│" in line]
    assert rows[0] == ["1", "", "mean radius", "InvalidRecord", "reason 0"]  # no id: an empty cell
    assert [(r[0], r[1], r[4]) for r in rows[1:]] == [(str(i * 3 + 1), f"row-{i}", f"reason {i}") for i in range(1, 7)]
    assert [c.strip() for c in out.splitlines()[0].split("┃")] == ERROR_HEADER

    code, out, err = run(capsys, "jobs", "errors", "job-1", "--json", "--limit", "0", "--page-size", "2")
    listed = json.loads(out)  # a JSON array, as `jobs results --json`
    assert code == 0 and [e["line"] for e in listed] == [1, 4, 7, 10, 13, 16, 19]
    assert listed[1] == {
        "recordIndex": 3,
        "line": 4,
        "id": "row-1",
        "field": "mean radius",
        "code": "InvalidRecord",
        "message": "reason 1",
    }
    assert fake.error_pages[-1] == 2

    code, out, err = run(capsys, "jobs", "errors", "job-1", "--limit", "3")
    assert code == 0 and "reason 2" in out and "reason 3" not in out
    assert "the first 3 shown; all of them: aiaas jobs errors job-1 --limit 0" in err
    code, _, err = run(capsys, "jobs", "errors", "job-9")
    assert code == 1 and "NotFound (404)" in err


@pytest.mark.parametrize("status", ["partially_succeeded", "failed"])
def test_submit_wait_ending_with_failed_records_shows_the_first_five_and_how_to_see_all(
    fake: FakeClient, upload: Path, capsys: pytest.CaptureFixture[str], status: str
) -> None:
    # The error the platform sets on such a job (shared/domain/jobs.py Job.outcome): it points at a blob.
    error = (
        {
            "code": "SomeRecordsFailed",
            "message": "7 of 30 records failed (the first: line 1: mean radius is missing); see errors.jsonl",
        }
        if status == "partially_succeeded"
        else {
            "code": "AllRecordsFailed",
            "message": "all 7 records failed (the first: line 1: mean radius is missing); see errors.jsonl",
        }
    )
    records = {"records": 30, "succeeded": 23, "failed": 7} if error["code"] == "SomeRecordsFailed" else None
    fake.final = job(status, counts=records or {"records": 7, "succeeded": 0, "failed": 7}, error=error)

    code, out, err = run(capsys, "jobs", "submit", str(upload), "--model", "breast-cancer", "--wait")

    assert code == (2 if status == "partially_succeeded" else 1)
    exit_line = next(line for line in err.splitlines() if line.startswith(f"job job-1 {status}: "))
    assert f"{error['code']}: {error['message']}" in exit_line  # the platform's reason, then the command
    assert exit_line.endswith("(failed records: `aiaas jobs errors job-1`)")
    rows = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "│" in line]
    assert [(r[0], r[4]) for r in rows] == [(str(i * 3 + 1), f"reason {i}") for i in range(5)]
    assert "the first 5 of 7" in out
    assert "all of them: aiaas jobs errors job-1" in out
    assert fake.error_pages == [5]  # one small page, not the job's every failed record
    code, out, _ = run(capsys, "jobs", "submit", str(upload), "--model", "breast-cancer", "--wait", "--json")
    assert "errors" not in json.loads(out) and "reason 0" not in out  # scripts get the job, as before
    code, out, _ = run(capsys, "jobs", "show", "job-1")
    assert code == 0 and "failed records: aiaas jobs errors job-1" in out


def test_events_tail_shows_each_event_once_until_ctrl_c(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "events", "tail", "--type", "AIaaS.Job.Succeeded", "--json", "--interval", "0.2")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["ev-1"]
    assert fake.events.calls[0]["type"] == "AIaaS.Job.Succeeded"


def test_usage_table_and_json(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "usage", "--json")
    assert code == 0 and json.loads(out)["totals"]["records"] == 10
    code, out, _ = run(capsys, "usage")
    assert "breast-cancer" in out and "concurrentJobs" in out


def test_subscriptions_and_cancel(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "subscriptions", "create", "https://hooks.example/x", "--event-type", "AIaaS.Job.Failed", "--json"
    )
    assert code == 0 and json.loads(out)["subscriptionId"] == "s1"
    assert fake.subscriptions.created["event_types"] == ["AIaaS.Job.Failed"]
    code, out, _ = run(capsys, "subscriptions", "deadletters", "s1")
    assert code == 0 and "UndeliverableDueToClientError" in out and "ev-9" in out
    code, out, _ = run(capsys, "subscriptions", "redeliver", "s1", "--event-id", "ev-9", "--json")
    assert json.loads(out)["events"] == 1 and fake.subscriptions.redelivered == {"event_ids": ["ev-9"]}
    code, _, err = run(capsys, "subscriptions", "redeliver", "s1")
    assert code == 1 and "--event-id" in err
    code, out, _ = run(capsys, "jobs", "cancel", "job-1", "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled"


def test_subscriptions_create_takes_a_callback_a_secret_and_models_and_show_reads_one(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cret-of-twenty-chars"
    code, out, _ = run(
        capsys,
        "subscriptions",
        "create",
        "--endpoint-url",
        "https://hooks.example/x",
        "--secret",
        secret,
        "--model-name",
        "breast-cancer",
        "--model-name",
        "transactions",
        "--json",
    )
    assert code == 0 and json.loads(out)["hasSecret"] is True and secret not in out
    assert fake.subscriptions.created == {
        "endpoint_url": "https://hooks.example/x",
        "callback_url": None,
        "event_types": None,
        "model_names": ["breast-cancer", "transactions"],
        "schema": "EventGridSchema",
        "max_delivery_attempts": None,
        "event_time_to_live_in_minutes": None,
        "secret": secret,
    }
    code, out, _ = run(capsys, "subscriptions", "create", "--callback-url", "https://prod-1.logic.example/cb?sig=x")
    assert code == 0 and fake.subscriptions.created["callback_url"] == "https://prod-1.logic.example/cb?sig=x"
    assert fake.subscriptions.created["endpoint_url"] is None
    assert "callback" in out and "https://prod-1.logic.example/cb" in out and "sig=x" not in out

    # A webhook or a callback, exactly one: refused before anything is sent.
    fake.subscriptions.created = {}
    for args in (
        ("https://hooks.example/x", "--callback-url", "https://prod-1.logic.example/cb"),
        ("--endpoint-url", "https://hooks.example/x", "--callback-url", "https://prod-1.logic.example/cb"),
        (),
    ):
        code, out, err = run(capsys, "subscriptions", "create", *args)
        assert code == 1 and "--callback-url, one of them" in err and out == ""
    assert fake.subscriptions.created == {}

    code, out, _ = run(capsys, "subscriptions", "show", "s1", "--json")
    assert code == 0 and json.loads(out)["retryPolicy"] == {"maxDeliveryAttempts": 5, "eventTimeToLiveInMinutes": 60}
    code, out, _ = run(capsys, "subscriptions", "show", "s1")
    shown = {line.split(maxsplit=1)[0]: line for line in out.splitlines() if line.strip()}
    assert code == 0 and "CloudEventSchemaV1_0" in shown["schema"] and "breast-cancer" in shown["models"]
    assert "60 min" in out and "set (never shown)" in shown["secret"]
    code, _, err = run(capsys, "subscriptions", "show", "s9")
    assert code == 1 and "NotFound (404)" in err


def test_the_help_lists_every_jobs_command_and_the_tenants_keys_forms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())
    jobs = listing[listing.index("jobs tenant:") :].split(" events ")[0]
    assert all(command in jobs for command in ("submit", "list", "show", "results", "errors", "cancel")), jobs
    with pytest.raises(SystemExit):
        cli.main(["keys", "--help"])
    keys = " ".join(capsys.readouterr().out.split())
    for form in ("keys create --name N --role R", "keys list [--json]", "keys revoke KEY_ID", "AIAAS_API_KEY"):
        assert form in keys, keys
    assert "keys create TENANT" in keys


def test_the_sdk_declares_the_aiaas_script_and_the_cli_extra_it_imports(capsys: pytest.CaptureFixture[str]) -> None:
    project = tomllib.loads((REPO / "clients/python/pyproject.toml").read_text())["project"]
    assert project["scripts"]["aiaas"] == "aiaas_client.cli:main"
    extra = [Requirement(text) for text in project["optional-dependencies"]["cli"]]
    assert sorted(r.name for r in extra) == ["rich", "typer"]  # what aiaas_client/cli.py imports beyond the SDK
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    for requirement in extra:  # the range starts at the version the platform is tested with
        assert [s.version for s in requirement.specifier if s.operator == ">="] == [pins[requirement.name]]
        assert any(s.operator == "<" for s in requirement.specifier), f"{requirement}: no upper bound"
    # What the SDK's `aiaas` runs without the platform: the tenant's commands alone, and where the others are.
    assert client_cli.main(["--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert all(f" {command} " in shown for command in ("jobs", "events", "usage", "subscriptions", "keys"))
    assert "come with the platform" in shown and " tenants " not in shown
    # Here the platform is installed too (its `aiaas` declared as well): the SDK's script hands over to it, so
    # bin/aiaas is the superset whichever package pip installed last.
    assert client_cli.platform_main() is cli.main


def test_without_the_cli_extra_aiaas_says_what_to_install(tmp_path: Path) -> None:
    # typer not installed (the SDK without its extra): a package of that name that cannot be imported comes first.
    (tmp_path / "typer").mkdir()
    (tmp_path / "typer/__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'typer'\")\n")
    done = subprocess.run(
        [sys.executable, "-c", "from aiaas_client.cli import main; main()", "jobs", "list"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "pip install 'aiaas-client[cli]'" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_key_just_created_is_the_only_key_printed(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "create", "--name", "ci", "--role", "AIaaS.Reader")
    assert code == 0 and NEW_KEY in out
    code, out, _ = run(capsys, "keys", "list", "--json")
    assert json.loads(out) == [{"id": "k1", "name": "admin", "role": "AIaaS.Admin"}]


def test_keys_naming_a_tenant_stay_the_operators() -> None:
    assert client_cli.handles(["keys", "create", "--name", "n", "--role", "AIaaS.Reader"])
    assert client_cli.handles(["keys", "list", "--json"])
    assert client_cli.handles(["keys", "revoke", "k1"])
    assert client_cli.handles(["jobs", "list"]) and client_cli.handles(["usage"])
    assert not client_cli.handles(["keys", "create", "acme", "--name", "n", "--role", "AIaaS.Reader"])
    assert not client_cli.handles(["keys", "list", "acme"])
    assert not client_cli.handles(["keys", "revoke", "acme", "k1"])
    assert not client_cli.handles(["tenants", "list"]) and not client_cli.handles([])


def test_credentials_from_environment_and_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profile.toml"
    profiles.write_text(
        '[default]\napi_url = "http://d/api"\napi_key = "kd"\n[prod]\napi_url = "http://p/api"\napi_key = "kp"\n'
    )
    monkeypatch.setenv("AIAAS_PROFILE_FILE", str(profiles))
    assert client_cli.resolve_credentials(None, {}) == ("http://d/api", "kd")
    assert client_cli.resolve_credentials(None, {"AIAAS_API_KEY": "ke"}) == ("http://d/api", "ke")
    assert client_cli.resolve_credentials(None, {"AIAAS_PROFILE": "prod"}) == ("http://p/api", "kp")
    # --profile wins over the environment.
    assert client_cli.resolve_credentials("prod", {"AIAAS_API_KEY": "ke"}) == ("http://p/api", "kp")
    with pytest.raises(client_cli.CliError, match="no profile 'staging'"):
        client_cli.resolve_credentials("staging", {})
    monkeypatch.setenv("AIAAS_PROFILE_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(client_cli.CliError, match="no API key"):
        client_cli.resolve_credentials(None, {"AIAAS_API_URL": "http://x/api"})


def test_operator_commands_still_parse() -> None:
    args = cli.build_parser().parse_args(["keys", "create", "acme", "--name", "n", "--role", "AIaaS.Reader"])
    assert args.func is cli.cmd_keys_create and args.tenant_id == "acme"
