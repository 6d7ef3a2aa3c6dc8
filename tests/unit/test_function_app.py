"""`import function_app` in a clean process: no setting read, no connection opened, every function registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: every connection attempt is refused and recorded; then function_app is imported.
PROBE = """
import json, socket
attempts = []
def refuse(self, address, *args):
    attempts.append(repr(address))
    raise OSError("this test allows no network")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse

import function_app
from shared.config import get_settings

functions = {f.get_function_name(): json.loads(f.get_function_json()) for f in function_app.app.get_functions()}
print(json.dumps({"attempts": attempts, "settingsRead": get_settings.cache_info().currsize, "functions": functions}))
"""

WRONG_PRODUCTION = {
    "AIAAS_ENVIRONMENT": "production",
    "AIAAS_COSMOS_ENDPOINT": "https://127.0.0.1:8081/",  # refused in production
    "AIAAS_JOB_QUEUE_BACKEND": "servicebus",  # without a namespace
    "AIAAS_QUEUE_VISIBILITY_SECONDS": "a while",  # not even a number
    "AIAAS_STALL_SECONDS": "1",
    "ServiceBusConnection__fullyQualifiedNamespace": "nowhere.servicebus.windows.net",
    "AzureWebJobsStorage": "",
}


@pytest.mark.parametrize(
    "settings",
    [pytest.param(WRONG_PRODUCTION, id="wrong-production-settings"), pytest.param({}, id="no-settings-at-all")],
)
def test_function_app_imports_and_registers_every_function_with_settings_absent_or_wrong(
    settings: dict[str, str],
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIAAS_")}
    env.update(settings)

    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["attempts"] == [] and probe["settingsRead"] == 0
    functions = probe["functions"]
    assert set(functions) == {"http_app_func", "ingest_blob", "run_shard", "sweep_jobs"}
    [trigger] = functions["run_shard"]["bindings"]
    assert trigger["type"] == "serviceBusTrigger" and trigger["queueName"] == "%AIAAS_JOB_QUEUE_NAME%"
    assert not trigger.get("isSessionsEnabled")  # sessions would run each tenant's shards one at a time
