"""checkov (run from .venv-iac) passes on bicep/ with every suppression carrying a written reason."""

from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from tests.unit.test_bicep_parse import BICEP_DIR, broken_copy, iac_tool

# checkov writes this when a `// checkov:skip=CKV_...` comment has no `:reason` after the id.
NO_REASON = "No comment provided"


@lru_cache(maxsize=8)
def _scan_cached(directory: str) -> str:
    # Offline: --skip-download makes no call to the vendor's platform (its guidelines only add links), and
    # CKV_SKIP_PACKAGE_UPDATE_CHECK stops the version check against PyPI that checkov makes on import.
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
    out = subprocess.run(
        [
            str(iac_tool("checkov")),
            "-d",
            directory,
            "--framework",
            "bicep",
            "--skip-download",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    # Exit code 1 means findings; anything else is checkov itself failing.
    assert out.returncode in (0, 1), out.stderr[-2000:]
    return out.stdout


def scan(directory: Path) -> dict[str, Any]:
    report = json.loads(_scan_cached(str(directory)))
    reports = report if isinstance(report, list) else [report]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    assert len(bicep) == 1, f"checkov found no Bicep to scan in {directory}"
    result: dict[str, Any] = bicep[0]
    return result


def _findings(report: dict[str, Any]) -> list[str]:
    return [f"{c['check_id']} {c['file_path']} {c['resource']}" for c in report["results"].get("failed_checks", [])]


def test_checkov_passes_with_reasons_for_every_suppression() -> None:
    report = scan(BICEP_DIR)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert _findings(report) == []
    assert summary["passed"] >= 20
    skipped = report["results"].get("skipped_checks", [])
    unexplained = [
        f"{c['check_id']} {c['file_path']} {c['resource']}"
        for c in skipped
        if len(c["check_result"].get("suppress_comment", NO_REASON).strip()) < 15
        or c["check_result"].get("suppress_comment") == NO_REASON
    ]
    assert unexplained == []


def test_key_auth_on_cosmos_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(tmp_path, "modules/cosmos.bicep", "disableLocalAuth: true", "disableLocalAuth: false")
    findings = _findings(scan(copy))
    assert "CKV_AZURE_140 /modules/cosmos.bicep Microsoft.DocumentDB/databaseAccounts.account" in findings


def test_an_old_tls_version_on_storage_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(tmp_path, "modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'")
    findings = _findings(scan(copy))
    assert "CKV_AZURE_44 /modules/storage.bicep Microsoft.Storage/storageAccounts.storage" in findings


def test_a_suppression_without_a_reason_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(
        tmp_path,
        "modules/functionapp.bicep",
        "// checkov:skip=CKV_AZURE_80:a Python app; no .NET Framework runs",
        "// checkov:skip=CKV_AZURE_80",
    )
    skipped = scan(copy)["results"]["skipped_checks"]
    assert [c["check_result"]["suppress_comment"] for c in skipped if c["check_id"] == "CKV_AZURE_80"] == [NO_REASON]


def test_a_syntax_checkov_cannot_read_is_reported(tmp_path: Path) -> None:
    # A call split over lines: valid Bicep, but checkov's parser gives up on the file and checks none of it.
    copy = broken_copy(
        tmp_path,
        "modules/rbac.bicep",
        "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)",
        "subscriptionResourceId(\n'Microsoft.Authorization/roleDefinitions',\nroles.monitoringMetricsPublisher\n)",
    )
    assert scan(copy)["summary"]["parsing_errors"] == 1
