"""Locks, timeouts, the sweeper and shard sizes agree across host.json, the Bicep stamp and the Settings.

The rules (each a way work was lost or run twice when it broke):
- the Functions host renews a message's lock for as long as a run may take (maxAutoLockRenewalDuration >=
  functionTimeout), and the app knows that timeout (AIAAS_SHARD_TIMEOUT_SECONDS: the local worker and the
  shard heartbeat stop there);
- the queue's lock is what the local queue plays (AIAAS_QUEUE_VISIBILITY_SECONDS), at most 5 minutes;
- the sweeper waits longer than a lock (a crashed worker's message comes back first) and longer than duplicate
  detection remembers a message id (else its re-drive of a lost shard is dropped as a duplicate);
- no sessions anywhere; the fleet limit is what the fleet runs at once;
- every built-in model's shard, and the biggest archive admission accepts, finish well inside the timeout.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings

REPO = Path(__file__).resolve().parents[2]
HOST = json.loads((REPO / "host.json").read_text())
SERVICEBUS_BICEP = (REPO / "bicep/modules/servicebus.bicep").read_text()
FUNCTIONAPP_BICEP = (REPO / "bicep/modules/functionapp.bicep").read_text()
# The pipeline runs at a fraction of the raw parse + model rate (bench: 1/6 on a 100k-row file, less on tiny
# files); a shard may take a tenth of the timeout at the raw rate, which leaves the pipeline that factor.
HEADROOM = 10


def timespan(value: str) -> int:
    """host.json's "hh:mm:ss" in seconds."""
    hours, minutes, seconds = (int(part) for part in value.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def iso_duration(value: str) -> int:
    """Bicep's ISO 8601 'PT1H2M3S' in seconds."""
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", value)
    assert match, value
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def queue_property(name: str) -> str:
    match = re.search(rf"^\s*{name}: (.+)$", SERVICEBUS_BICEP, re.MULTILINE)
    assert match, name
    return match.group(1).strip().strip("'")


def bicep_number(expression: str) -> int:
    """Evaluates the few forms the app settings use: a literal, a param or var, string(x), min(a, b)."""
    expression = expression.strip()
    if match := re.fullmatch(r"string\((.+)\)", expression):
        return bicep_number(match.group(1))
    if match := re.fullmatch(r"min\((.+), (.+)\)", expression):
        return min(bicep_number(match.group(1)), bicep_number(match.group(2)))
    if re.fullmatch(r"'?\d+'?", expression):
        return int(expression.strip("'"))
    if match := re.search(rf"^param {expression} int = (\d+)$", FUNCTIONAPP_BICEP, re.MULTILINE):
        return int(match.group(1))
    if match := re.search(rf"^var {expression} = (.+)$", FUNCTIONAPP_BICEP, re.MULTILINE):
        return bicep_number(match.group(1))
    raise AssertionError(f"cannot evaluate {expression!r}")


def param_default(name: str) -> str:
    match = re.search(rf"^param {name} string = '([^']*)'$", FUNCTIONAPP_BICEP, re.MULTILINE)
    assert match, f"functionapp.bicep has no string parameter {name} with a default"
    return match.group(1)


def app_setting(name: str) -> str:
    match = re.search(rf"^\s*{name}: (.+)$", FUNCTIONAPP_BICEP, re.MULTILINE)
    assert match, f"{name} is not among the app settings in functionapp.bicep"
    return match.group(1).strip()


def app_number(name: str) -> int:
    return bicep_number(app_setting(name))


DEFAULTS = Settings(environment="development")


def test_no_sessions_anywhere() -> None:
    assert queue_property("requiresSession") == "false"
    assert not {"maxConcurrentSessions", "sessionIdleTimeout"} & set(HOST["extensions"]["serviceBus"])


def test_the_lock_is_renewed_for_the_whole_function_timeout_which_the_app_knows() -> None:
    function_timeout = timespan(HOST["functionTimeout"])
    renewal = timespan(HOST["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"])

    assert renewal >= function_timeout
    assert app_number("AIAAS_SHARD_TIMEOUT_SECONDS") == function_timeout == DEFAULTS.shard_timeout_seconds


def test_the_queue_lock_is_what_the_local_queue_plays_and_at_most_five_minutes() -> None:
    lock = iso_duration(queue_property("lockDuration"))

    assert lock <= 300  # Service Bus quotas: lockDuration at most 5 minutes
    assert app_number("AIAAS_QUEUE_VISIBILITY_SECONDS") == lock == DEFAULTS.queue_visibility_seconds


def test_the_sweeper_outwaits_the_lock_and_duplicate_detection() -> None:
    stall = app_number("AIAAS_STALL_SECONDS")

    assert stall == DEFAULTS.stall_seconds
    assert stall > iso_duration(queue_property("lockDuration"))
    assert queue_property("requiresDuplicateDetection") == "true"
    assert stall > iso_duration(queue_property("duplicateDetectionHistoryTimeWindow"))
    assert int(queue_property("maxDeliveryCount")) == app_number("AIAAS_MAX_DELIVERY_COUNT")


def test_the_fleet_limit_is_what_the_fleet_runs_and_the_stamps_settings_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    per_instance = HOST["extensions"]["serviceBus"]["maxConcurrentCalls"]
    fleet = app_number("AIAAS_MAX_SHARDS_IN_FLIGHT")
    tenant = app_number("AIAAS_TENANT_MAX_SHARDS_IN_FLIGHT")
    assert fleet == bicep_number("maximumInstanceCount") * per_instance
    assert 1 < tenant < fleet  # a share of the fleet, bigger than the local default

    literal = dict(re.findall(r"^\s*(AIAAS_[A-Z_]+): '([^'$]*)'$", FUNCTIONAPP_BICEP, re.MULTILINE))
    computed = {
        "AIAAS_MAX_SHARDS_IN_FLIGHT": str(fleet),
        "AIAAS_TENANT_MAX_SHARDS_IN_FLIGHT": str(tenant),
        # Set from other resources' outputs at deployment: stand-ins of the right shape.
        "AIAAS_STORAGE_ACCOUNT_NAME": "stexample",
        "AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME": "stplatformexample",
        "AIAAS_REGION": "westeurope",
        "AIAAS_DIRECTORY_ENDPOINT": "https://cosmos-directory-example.documents.azure.com:443/",
        "AIAAS_COSMOS_ENDPOINT": "https://cosmos-example.documents.azure.com:443/",
        "AIAAS_SERVICEBUS_NAMESPACE": "sb-example.servicebus.windows.net",
        "AIAAS_EVENTGRID_ENDPOINT": "https://evgd-example.westeurope-1.eventgrid.azure.net/api/events",
        "AIAAS_PUBLIC_API_URL": "https://func-example.azurewebsites.net/api",
        "AIAAS_PLATFORM_STORAGE_ACCOUNT_ID": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage"
        "/storageAccounts/stpexample",
        "AIAAS_DEADLETTER_CONTAINER": param_default("deadLetterContainerName"),
        "AIAAS_CALLBACK_HOSTS": param_default("callbackHosts"),
        # What App Service puts in place of the Key Vault reference: the secret's value.
        "AIAAS_RELAY_KEY": "a-relay-key-from-the-stamps-vault-0123456789",
    }
    for name in [name for name in os.environ if name.startswith("AIAAS_")]:
        monkeypatch.delenv(name)
    for name, value in {**literal, **computed}.items():
        monkeypatch.setenv(name, value)

    stamp = Settings()

    assert stamp.environment == "production"
    assert (stamp.max_shards_in_flight, stamp.tenant_max_shards_in_flight) == (fleet, tenant)
    assert stamp.shard_timeout_seconds == timespan(HOST["functionTimeout"])
    # Logic Apps callbacks only, and dead letters where the domain writes them.
    assert (stamp.callback_hosts, stamp.deadletter_container) == (".logic.azure.com", "deadletter")


# Each built-in model's sample file (for its bytes per record) and the bench's name for it.
SAMPLES = {
    "breast-cancer-classifier": "breast-cancer.jsonl",
    "transaction-anomaly-detector": "transactions.jsonl",
    "text-embedding": "texts.txt",
    "zero-shot-text-classifier": "zero-shot.jsonl",
    "digits-classifier": "digits.zip",
}


def _raw_rates() -> dict[str, float]:
    results = REPO / "bench/results.json"
    if not results.is_file():
        pytest.skip("bench/results.json is missing: run `make bench` to measure the models' raw rates")
    raw: list[dict[str, Any]] = json.loads(results.read_text()).get("rawByModel") or []
    if not raw:
        pytest.skip("bench/results.json has no rawByModel figures")
    return {entry["model"]: float(entry["rowsPerSecond"]) for entry in raw}


def test_every_built_in_models_shard_and_the_biggest_archive_finish_well_inside_the_timeout() -> None:
    rates = _raw_rates()
    cards = {
        json.loads(path.read_text())["name"]: json.loads(path.read_text())
        for path in (REPO / "build/models").glob("*/*/card.json")
    }
    if not cards:
        pytest.skip("no model packages: run `make models`")
    budget = DEFAULTS.shard_timeout_seconds / HEADROOM
    checked = []
    for name, card in cards.items():
        if name not in rates or name not in SAMPLES:
            continue
        sample = REPO / "build/samples" / SAMPLES[name]
        if sample.suffix == ".zip":  # one shard: admission bounds its entries
            seconds = DEFAULTS.max_archive_entries / rates[name]
        else:
            lines = [line for line in sample.read_bytes().splitlines() if line.strip()]
            bytes_per_record = sum(len(line) + 1 for line in lines) / len(lines)
            shard_bytes = card.get("shardBytes") or DEFAULTS.shard_bytes
            seconds = shard_bytes / bytes_per_record / rates[name]
        assert seconds <= budget, f"a shard of {name} takes ~{seconds:.0f}s at the raw rate; the budget is {budget}s"
        checked.append(name)
    assert len(checked) >= 4
