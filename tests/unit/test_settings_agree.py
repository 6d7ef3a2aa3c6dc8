"""shared/config.py, local.settings.example.json and the function app's settings in bicep/ name the same settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.config import Settings
from tests.unit.test_bicep_parse import BICEP_DIR, broken_copy, parse_dir

ROOT = Path(__file__).resolve().parents[2]
APP_TYPE = "Microsoft.Web/sites/config"

# Settings the function app in Azure must not get, each with why.
NOT_IN_AZURE = {
    "AIAAS_STORAGE_CONNECTION_STRING": "a key: Azure uses the managed identity and AIAAS_STORAGE_ACCOUNT_NAME",
    "AIAAS_PLATFORM_STORAGE_CONNECTION_STRING": "a key: Azure uses the identity, AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME",
    "AIAAS_COSMOS_KEY": "a key: Cosmos DB local auth is off, the managed identity signs in",
    "AIAAS_EVENTGRID_KEY": "a key: the domain's local auth is off, the managed identity publishes",
    "AIAAS_API_HOST": "the local host's listen address (Functions serves the HTTP API in Azure)",
    "AIAAS_API_PORT": "the local host's port",
    "AIAAS_AZURITE_BLOB_PORT": "a local stand-in's port",
    "AIAAS_AZURITE_QUEUE_PORT": "a local stand-in's port",
    "AIAAS_AZURITE_TABLE_PORT": "a local stand-in's port",
    "AIAAS_COSMOS_PORT": "a local stand-in's port",
    "AIAAS_DATA_DIR": "where the local stand-ins keep their data",
    "AIAAS_MODELS_DIR": "the local model packages `aiaas up` publishes; Azure reads AIAAS_MODELS_CONTAINER",
    "AIAAS_WORKERS": "the local host's worker processes (Flex Consumption scales instances)",
    "AIAAS_WATCH_INTERVAL_SECONDS": "the local host's inbox polling (Event Grid pushes BlobCreated in Azure)",
    "AIAAS_SWEEP_INTERVAL_SECONDS": "the local host's sweeper loop",
    "AIAAS_EVENT_TIME_SCALE": "the local event broker's clock (Event Grid keeps real time)",
    "AIAAS_EVENT_DELIVERY_TIMEOUT_SECONDS": "the local event broker's answer timeout (Event Grid: 30 s, fixed)",
}
# AIAAS_ names in bicep/ that are not app settings: deployment parameters azd reads from its environment.
DEPLOYMENT_ONLY = {
    "AIAAS_COSMOS_SERVERLESS": "main.parameters.json: the capacity mode of the Cosmos DB account",
    "AIAAS_DEPLOY_BLOB_EVENT_SUBSCRIPTION": "main.parameters.json: whether to create the BlobCreated subscription",
}


def settings_names() -> set[str]:
    return {f"AIAAS_{name.upper()}" for name in Settings.model_fields}


def names_the_code_reads() -> set[str]:
    """Settings fields, and AIAAS_ names the code reads from the environment directly."""
    literal = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/**/*.py"), ROOT / "function_app.py"]:
        literal |= set(re.findall(r"[\"'](AIAAS_[A-Z0-9_]+)[\"']", path.read_text()))
    return settings_names() | literal


def app_settings(directory: Path) -> dict[str, object]:
    """The function app's settings as declared in modules/functionapp.bicep."""
    parsed = {p["path"]: p for p in parse_dir(directory)}
    configs = [r for r in parsed["modules/functionapp.bicep"]["resources"] if r["type"] == APP_TYPE]
    assert len(configs) == 1
    properties: dict[str, object] = configs[0]["body"]["properties"]
    return properties


def bicep_names(directory: Path) -> set[str]:
    names: set[str] = set()
    for path in [*directory.rglob("*.bicep"), *directory.rglob("*.json")]:
        names |= set(re.findall(r"\bAIAAS_[A-Z0-9_]+\b", path.read_text()))
    return names


def disagreements(directory: Path, example_file: Path = ROOT / "local.settings.example.json") -> list[str]:
    out = []
    fields = settings_names()
    example = set(json.loads(example_file.read_text())["Values"])
    out += [f"{n} is missing from local.settings.example.json" for n in sorted(fields - example)]
    out += [
        f"{n} in local.settings.example.json is no setting"
        for n in sorted({n for n in example if n.startswith("AIAAS_")} - fields)
    ]
    in_app = {n for n in app_settings(directory) if n.startswith("AIAAS_")}
    out += [f"{n} is not set by the function app in bicep/" for n in sorted(fields - in_app - set(NOT_IN_AZURE))]
    out += [f"{n} must not be set in Azure: {NOT_IN_AZURE[n]}" for n in sorted(in_app & set(NOT_IN_AZURE))]
    unread = bicep_names(directory) - names_the_code_reads() - set(DEPLOYMENT_ONLY)
    out += [f"{n} is named in bicep/ but the code does not read it" for n in sorted(unread)]
    return out


def test_config_example_and_bicep_agree() -> None:
    assert disagreements(BICEP_DIR) == []
    # The production settings the code refuses to start without are set, to Azure values.
    app = app_settings(BICEP_DIR)
    assert app["AIAAS_ENVIRONMENT"] == "production"
    assert app["AIAAS_JOB_QUEUE_BACKEND"] == "servicebus"
    for name in ("AIAAS_STORAGE_ACCOUNT_NAME", "AIAAS_COSMOS_ENDPOINT", "AIAAS_EVENTGRID_ENDPOINT"):
        assert name in app


def test_the_exceptions_name_real_settings() -> None:
    assert set(NOT_IN_AZURE) <= settings_names()
    assert not set(DEPLOYMENT_ONLY) & settings_names()


def test_a_setting_the_app_lacks_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(tmp_path, "modules/functionapp.bicep", "    AIAAS_SHARD_BYTES: '33554432'\n", "")
    assert disagreements(copy) == ["AIAAS_SHARD_BYTES is not set by the function app in bicep/"]


def test_a_setting_the_code_does_not_read_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(
        tmp_path, "modules/functionapp.bicep", "    AIAAS_SHARD_BYTES: '33554432'\n", "    AIAAS_SHARD_SIZE: '1'\n"
    )
    assert disagreements(copy) == [
        "AIAAS_SHARD_BYTES is not set by the function app in bicep/",
        "AIAAS_SHARD_SIZE is named in bicep/ but the code does not read it",
    ]


def test_a_key_setting_in_azure_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(
        tmp_path,
        "modules/functionapp.bicep",
        "    AIAAS_ENVIRONMENT: 'production'\n",
        "    AIAAS_ENVIRONMENT: 'production'\n    AIAAS_COSMOS_KEY: cosmosKey\n",
    )
    assert disagreements(copy) == [
        "AIAAS_COSMOS_KEY must not be set in Azure: a key: Cosmos DB local auth is off, the managed identity signs in"
    ]


def test_a_setting_missing_from_the_example_is_reported(tmp_path: Path) -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    del example["Values"]["AIAAS_BATCH_SIZE"]
    example["Values"]["AIAAS_BATCH_SIZ"] = "1"
    (tmp_path / "example.json").write_text(json.dumps(example))
    assert disagreements(BICEP_DIR, tmp_path / "example.json") == [
        "AIAAS_BATCH_SIZE is missing from local.settings.example.json",
        "AIAAS_BATCH_SIZ in local.settings.example.json is no setting",
    ]
