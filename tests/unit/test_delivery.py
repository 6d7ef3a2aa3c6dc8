"""The delivery pipelines pass their schemas and zizmor, and those checks catch a broken copy."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
PIPELINE = ROOT / "azure-pipelines.yml"
CI_BIN = ROOT / ".venv-ci" / "bin"


@pytest.fixture(autouse=True, scope="module")
def _tools() -> None:
    """The workflow checks live in .venv-ci; a missing tool fails (never skips) the checks."""
    missing = [tool for tool in ("zizmor", "check-jsonschema") if not (CI_BIN / tool).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing from .venv-ci: run `make .venv-ci/.installed` (make test does)")


def _schema(builtin: str, *files: Path) -> subprocess.CompletedProcess[str]:
    # The Azure Pipelines schema has patterns that ECMAScript's unicode mode rejects: nonunicode is its dialect.
    return subprocess.run(
        [str(CI_BIN / "check-jsonschema"), "--regex-variant", "nonunicode", "--builtin-schema", builtin]
        + [str(file) for file in files],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _zizmor(*files: Path) -> tuple[int, list[str]]:
    # Offline: no GitHub API token here, and online audits would make the result depend on the network. Pedantic:
    # the strictest persona, so that nothing is left suppressed.
    done = subprocess.run(
        [str(CI_BIN / "zizmor"), "--offline", "--persona", "pedantic", "--format", "json", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, sorted({finding["ident"] for finding in json.loads(done.stdout or "[]")})


def _workflow_copy(tmp_path: Path, name: str, edit: Any) -> Path:
    target = tmp_path / ".github" / "workflows"
    shutil.copytree(WORKFLOWS, target)
    path = target / name
    text = path.read_text()
    changed = edit(text)
    assert changed != text, "the edit must break something"
    path.write_text(changed)
    return path


def _load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_workflows_pass_the_github_workflow_schema() -> None:
    done = _schema("vendor.github-workflows", *sorted(WORKFLOWS.glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_job_without_runs_on_fails_the_schema(tmp_path: Path) -> None:
    broken = _workflow_copy(tmp_path, "ci.yml", lambda t: t.replace("    runs-on: ubuntu-24.04\n", "", 1))
    done = _schema("vendor.github-workflows", broken)
    assert done.returncode != 0
    assert "runs-on" in done.stdout


def test_an_unknown_job_key_fails_the_schema(tmp_path: Path) -> None:
    broken = _workflow_copy(tmp_path, "ci.yml", lambda t: t.replace("timeout-minutes: 60\n", "timeout: 60\n", 1))
    assert _schema("vendor.github-workflows", broken).returncode != 0


def test_workflows_have_no_zizmor_finding() -> None:
    code, findings = _zizmor(*sorted(WORKFLOWS.glob("*.yml")))
    assert (code, findings) == (0, [])


def test_zizmor_flags_an_unpinned_action(tmp_path: Path) -> None:
    broken = _workflow_copy(
        tmp_path, "deploy-stage.yml", lambda t: re.sub(r"azure/login@[0-9a-f]{40}", "azure/login@v3", t)
    )
    code, findings = _zizmor(broken)
    assert code != 0
    assert "unpinned-uses" in findings


def test_zizmor_flags_pull_request_target_with_a_checkout(tmp_path: Path) -> None:
    broken = _workflow_copy(
        tmp_path, "ci.yml", lambda t: t.replace('  push:\n    branches: ["**"]\n', "  pull_request_target:\n", 1)
    )
    code, findings = _zizmor(broken)
    assert code != 0
    assert "dangerous-triggers" in findings


def test_azure_pipeline_passes_its_schema() -> None:
    done = _schema("vendor.azure-pipelines", PIPELINE)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_an_unknown_stage_key_fails_the_azure_pipeline_schema(tmp_path: Path) -> None:
    broken = tmp_path / "azure-pipelines.yml"
    text = PIPELINE.read_text()
    broken.write_text(text.replace("    dependsOn: package\n", "    dependsOnn: package\n", 1))
    assert broken.read_text() != text
    assert _schema("vendor.azure-pipelines", broken).returncode != 0


def test_github_rollout_goes_stage_by_stage_and_previews_each_deployment() -> None:
    jobs = _load(WORKFLOWS / "ci.yml")["jobs"]
    assert jobs["package"]["needs"] == "test" and "refs/heads/main" in jobs["package"]["if"]
    # Each stage waits for the one before: a failure anywhere stops the rest.
    assert [jobs[name]["needs"] for name in ("dev", "prod-first-region", "prod-other-regions")] == [
        "package",
        "dev",
        "prod-first-region",
    ]
    assert jobs["prod-other-regions"]["strategy"]["max-parallel"] == 1
    # Only the deploying jobs may mint an OIDC token.
    assert [name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"] == [
        "dev",
        "prod-first-region",
        "prod-other-regions",
    ]
    deploy = _load(WORKFLOWS / "deploy-stage.yml")["jobs"]["deploy"]
    assert deploy["environment"] == "${{ inputs.environment }}"
    runs = [step.get("run", "") for step in deploy["steps"]]
    order = [
        next(i for i, run in enumerate(runs) if needle in run)
        for needle in ("what-if", "deployment sub create", "functionapp deploy", "smoke.py")
    ]
    assert order == sorted(order)


def test_azure_rollout_uses_deployment_jobs_on_environments_in_order() -> None:
    stages = _load(PIPELINE)["stages"]
    deploys = [stage for stage in stages if any("deployment" in job for job in stage["jobs"])]
    assert [stage["dependsOn"] for stage in deploys] == ["package"] + [stage["stage"] for stage in deploys[:-1]]
    environments = [stage["jobs"][0]["environment"] for stage in deploys]
    assert environments[0] == "dev" and all(env.startswith("prod-") for env in environments[1:])
    for stage in deploys:
        steps = stage["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"]
        text = [json.dumps(step) for step in steps]
        order = [next(i for i, t in enumerate(text) if n in t) for n in ("what-if", "sub create", "smoke.py")]
        assert order == sorted(order)


ALERTS = ROOT / "bicep" / "modules" / "alerts.bicep"
# Signals the code does not emit yet (the rules name them so that the first emitter is heard): see alerts.bicep.
NOT_YET_EMITTED = {"drifted", "quota"}


def _alert_queries() -> dict[str, str]:
    text = ALERTS.read_text()
    names = re.findall(r"^    name: '([a-z-]+)'$", text, flags=re.MULTILINE)
    # A Bicep string escapes a backslash as \\: KQL receives one.
    queries = [q.replace("\\\\", "\\") for q in re.findall(r"^    query: '(.*)'$", text, flags=re.MULTILINE)]
    assert len(names) == len(queries)
    return dict(zip(names, queries, strict=True))


def test_alert_rules_cover_what_an_operator_must_hear_about() -> None:
    assert set(_alert_queries()) == {
        "dead-lettered-shards",
        "dead-lettered-events",
        "job-failure-rate-per-model",
        "drift",
        "quota-rejections",
        "function-errors",
    }


def test_alert_queries_match_log_lines_the_code_writes() -> None:
    code = "\n".join(path.read_text() for folder in ("shared", "functions") for path in (ROOT / folder).rglob("*.py"))
    fragments = {
        fragment
        for query in _alert_queries().values()
        for fragment in re.findall(r'Message (?:has|startswith) "([^"]+)"', query)
    }
    assert fragments
    missing = sorted(f for f in fragments - NOT_YET_EMITTED if f not in code)
    assert missing == []


def _logged(fmt: str, *args: str) -> str:
    return logging.LogRecord("aiaas", logging.INFO, __file__, 0, fmt, args, None).getMessage()


def _first_group(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text)
    return found.group(1) if found else None


def test_job_failure_query_extracts_the_model_and_status_from_the_real_messages() -> None:
    query = _alert_queries()["job-failure-rate-per-model"]
    job_of_queued, model_of_queued, job_of_ended, status_of_ended = re.findall(
        r'extract\(@"([^"]+)", 1, Message\)', query
    )
    # The formats of shared/services/ingest.py and shared/services/outcomes.py, as logging renders them.
    queued = _logged("job %s queued: %s over %s", "0f3a", "breast-cancer-classifier", "inbox/bc/t1/a b.jsonl")
    ended = _logged("job %s ended %s; event published", "0f3a", "failed")
    assert _first_group(job_of_queued, queued) == "0f3a"
    assert _first_group(model_of_queued, queued) == "breast-cancer-classifier"
    assert _first_group(job_of_ended, ended) == "0f3a"
    assert _first_group(status_of_ended, ended) == "failed"


def test_every_parameter_file_a_stage_deploys_exists_and_names_only_parameters_of_main_bicep() -> None:
    texts = [path.read_text() for path in WORKFLOWS.glob("*.yml")] + [PIPELINE.read_text()]
    named = set(re.findall(r"bicep/params/([a-z0-9${}. ]+?)\.parameters\.json", "\n".join(texts)))
    regions = set(re.findall(r"region:\s*\[([^\]]+)\]", "\n".join(texts)))
    files = {name for name in named if "$" not in name}
    files |= {region.strip().strip("'\"") for group in regions for region in group.split(",")}
    declared = set(re.findall(r"^param (\w+)", (ROOT / "bicep/main.bicep").read_text(), re.M))
    assert files >= {"dev", "westeurope"}, files
    for name in sorted(files):
        path = ROOT / "bicep/params" / f"{name}.parameters.json"
        assert path.is_file(), f"a stage deploys {path}, which does not exist"
        parameters = json.loads(path.read_text())["parameters"]
        assert set(parameters) <= declared, (path.name, set(parameters) - declared)
        assert {"environmentName", "location"} <= set(parameters), path.name
