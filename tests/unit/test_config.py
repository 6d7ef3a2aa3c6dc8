"""Settings: production unless development is chosen; local defaults in development; production refuses
development values; the scheduling and timing settings agree with each other."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.config import AZURITE_KEY, COSMOS_EMULATOR_KEY, Settings, azurite_connection_string

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("AIAAS_"):
            monkeypatch.delenv(name)


def production(monkeypatch: pytest.MonkeyPatch, **overrides: str | None) -> None:
    """A complete, safe production environment, then the overrides (None removes a variable)."""
    values: dict[str, str | None] = {
        "AIAAS_ENVIRONMENT": "production",
        "AIAAS_STORAGE_ACCOUNT_NAME": "aiaasweu01",
        "AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME": "aiaaspweu01",
        "AIAAS_COSMOS_ENDPOINT": "https://aiaas-weu-01.documents.azure.com:443/",
        "AIAAS_EVENTGRID_ENDPOINT": "https://aiaas-weu-01.westeurope-1.eventgrid.azure.net/api/events",
        "AIAAS_PUBLIC_API_URL": "https://api.example.org/api",
        "AIAAS_REGION": "westeurope",
        "AIAAS_DIRECTORY_ENDPOINT": "https://cosmos-directory.documents.azure.com:443/",
        "AIAAS_CALLBACK_HOSTS": ".logic.azure.com",
        "AIAAS_RELAY_KEY": "a-relay-key-of-its-own",
        **overrides,
    }
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_no_environment_is_production_and_refuses_to_run_on_local_defaults() -> None:
    with pytest.raises(ValueError, match="unsafe production settings"):
        Settings()


def test_development_gives_the_local_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAAS_ENVIRONMENT", "development")

    settings = Settings()

    assert settings.environment == "development" and settings.is_development
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 7071)
    assert settings.public_api_url == "http://127.0.0.1:7071/api"
    assert (settings.azurite_blob_port, settings.azurite_queue_port, settings.azurite_table_port) == (
        10000,
        10001,
        10002,
    )
    conn = settings.storage_connection_string or ""
    assert "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;" in conn
    assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;" in conn
    assert "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;" in conn
    assert settings.cosmos_endpoint == "https://127.0.0.1:8081/"
    assert settings.cosmos_key == COSMOS_EMULATOR_KEY
    assert settings.eventgrid_endpoint == "http://127.0.0.1:7071/broker/api/events"
    assert settings.job_queue_backend == "storage" and settings.job_queue_name == "shards"


def test_local_ports_follow_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAAS_ENVIRONMENT", "development")
    monkeypatch.setenv("AIAAS_API_PORT", "8000")
    monkeypatch.setenv("AIAAS_AZURITE_BLOB_PORT", "20000")
    monkeypatch.setenv("AIAAS_COSMOS_PORT", "9081")

    settings = Settings()

    assert settings.public_api_url == "http://127.0.0.1:8000/api"
    assert "BlobEndpoint=http://127.0.0.1:20000/" in (settings.storage_connection_string or "")
    assert settings.cosmos_endpoint == "https://127.0.0.1:9081/"


def test_a_complete_production_environment_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    production(monkeypatch)

    settings = Settings()

    assert not settings.is_development
    assert settings.storage_connection_string is None and settings.cosmos_key is None


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"AIAAS_STORAGE_ACCOUNT_NAME": None}, "STORAGE_ACCOUNT_NAME", id="no-storage-account"),
        pytest.param(
            {"AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME": None}, "PLATFORM_STORAGE_ACCOUNT_NAME", id="no-platform-account"
        ),
        pytest.param(
            {"AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME": "aiaasweu01"}, "not be the tenants'", id="platform-is-tenants"
        ),
        pytest.param(
            {"AIAAS_STORAGE_CONNECTION_STRING": azurite_connection_string("127.0.0.1", 1, 2, 3)},
            "Azurite",
            id="azurite-key",
        ),
        pytest.param({"AIAAS_COSMOS_KEY": COSMOS_EMULATOR_KEY}, "emulator key", id="cosmos-emulator-key"),
        pytest.param({"AIAAS_COSMOS_ENDPOINT": "https://127.0.0.1:8081/"}, "COSMOS_ENDPOINT", id="cosmos-loopback"),
        pytest.param({"AIAAS_COSMOS_ENDPOINT": "https://localhost:8081/"}, "COSMOS_ENDPOINT", id="cosmos-localhost"),
        pytest.param({"AIAAS_COSMOS_ENDPOINT": None}, "COSMOS_ENDPOINT", id="no-cosmos"),
        pytest.param({"AIAAS_EVENTGRID_ENDPOINT": "http://eg.example.org/api/events"}, "EVENTGRID", id="eg-http"),
        pytest.param({"AIAAS_PUBLIC_API_URL": None}, "PUBLIC_API_URL", id="no-public-url"),
        pytest.param({"AIAAS_CALLBACK_HOSTS": None}, "CALLBACK_HOSTS", id="no-callback-hosts"),
        pytest.param({"AIAAS_RELAY_KEY": None}, "RELAY_KEY is required", id="no-relay-key"),
        pytest.param({"AIAAS_RELAY_KEY": "local-relay-key"}, "RELAY_KEY is required", id="dev-relay-key"),
        pytest.param(
            {"AIAAS_RELAY_KEY": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/p-relay-key)"},
            "unresolved Key Vault reference",
            id="unresolved-relay-key",
        ),
        pytest.param({"AIAAS_JOB_QUEUE_BACKEND": "servicebus"}, "SERVICEBUS_NAMESPACE", id="no-sb-namespace"),
    ],
)
def test_production_refuses_development_values(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str | None], complaint: str
) -> None:
    production(monkeypatch, **overrides)

    with pytest.raises(ValueError, match=complaint):
        Settings()


def test_the_well_known_development_keys_are_the_public_ones() -> None:
    assert AZURITE_KEY.startswith("Eby8vdM02xNOcqFl") and COSMOS_EMULATOR_KEY.startswith("C2y6yDjf5/R+ob0N8A7Cgv30")


def test_every_setting_appears_in_local_settings_example() -> None:
    values = json.loads((REPO_ROOT / "local.settings.example.json").read_text())["Values"]

    expected = {f"AIAAS_{name.upper()}" for name in Settings.model_fields}
    assert expected - set(values) == set()
    assert {name for name in values if name.startswith("AIAAS_")} - expected == set()


def test_the_example_settings_as_a_functions_host_sets_them_equal_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host exports every Value, empty ones included; an empty setting means "use the default"."""
    values = json.loads((REPO_ROOT / "local.settings.example.json").read_text())["Values"]
    for name, value in values.items():
        if name.startswith("AIAAS_"):
            monkeypatch.setenv(name, value)

    assert values["AIAAS_ENVIRONMENT"] == "development"  # the example is the local one
    from_example = Settings()
    for name in [n for n in os.environ if n.startswith("AIAAS_")]:
        monkeypatch.delenv(name)
    defaults = Settings(environment="development")

    def normalised(settings: Settings) -> dict[str, object]:
        return {name: None if value == "" else value for name, value in settings.model_dump().items()}

    assert normalised(from_example) == normalised(defaults)


def test_the_tenant_limit_follows_the_local_workers_in_development_and_the_fleet_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIAAS_ENVIRONMENT", "development")
    assert Settings().tenant_max_shards_in_flight == 2  # the two default local workers
    assert Settings(workers=5).tenant_max_shards_in_flight == 5
    assert Settings(tenant_max_shards_in_flight=3).tenant_max_shards_in_flight == 3

    production(monkeypatch)
    settings = Settings(max_shards_in_flight=100)
    assert (settings.tenant_max_shards_in_flight, settings.max_shards_in_flight) == (25, 100)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        pytest.param({"tenant_max_shards_in_flight": 9, "max_shards_in_flight": 8}, "TENANT_MAX", id="tenant-over-all"),
        pytest.param({"stall_seconds": 60, "queue_visibility_seconds": 60}, "STALL_SECONDS", id="stall-within-lock"),
        pytest.param({"shard_timeout_seconds": 30, "queue_visibility_seconds": 60}, "SHARD_TIMEOUT", id="timeout"),
        pytest.param({"queue_visibility_seconds": 301}, "less than or equal to 300", id="lock-over-5-minutes"),
    ],
)
def test_timings_and_limits_that_disagree_are_refused(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, int], complaint: str
) -> None:
    monkeypatch.setenv("AIAAS_ENVIRONMENT", "development")

    with pytest.raises(ValueError, match=complaint):
        Settings(**values)  # type: ignore[arg-type]
