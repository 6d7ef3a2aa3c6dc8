"""Two regional stamps side by side (`aiaas up --regions a,b`): a tenant's upload, job, results and events stay in its
home stamp, and the other stamp refuses it (421 WrongRegion) and holds nothing of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.cosmos_client import make_cosmos_client
from shared.config import COSMOS_EMULATOR_KEY
from shared.localhost.emulators import free_port
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import all_results, upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "build/samples/breast-cancer.jsonl"
MODEL = "breast-cancer-classifier"
# Every container of a stamp's database that holds tenants' documents (shared/adapters/cosmos*.py).
TENANT_CONTAINERS = ("tenants", "jobs", "results", "subscriptions", "uploads", "usage", "audit")


@dataclass
class Stamps:
    env: dict[str, str]  # the parent's settings: what `aiaas` commands on this machine run with
    api: dict[str, str]  # region -> API URL
    stamp_env: dict[str, dict[str, str]]  # region -> that stamp's settings (its stamps file)
    cosmos_port: int


def _models_of_this_test(data_dir: Path) -> Path:
    """A models directory with only the model these tests run: each stamp publishes every package it finds into
    its own storage account at start, and the two text models alone are 175 MB (seconds per stamp)."""
    models = data_dir / "models"
    shutil.copytree(REPO / "build/models" / MODEL, models / MODEL)
    return models


def _two_free_ports() -> int:
    """A free port whose next one is free too: the second stamp's API listens on AIAAS_API_PORT + 1."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="module")
def stamps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stamps]:
    if not list((REPO / "build/models").glob("*/*/card.json")):
        pytest.fail("no model packages: run `make models` (make test does)")
    data_dir = tmp_path_factory.mktemp("stamps")
    cosmos_port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("AIAAS_")},
        "AIAAS_ENVIRONMENT": "development",
        "AIAAS_DATA_DIR": str(data_dir),
        "AIAAS_MODELS_DIR": str(_models_of_this_test(data_dir)),
        "AIAAS_API_PORT": str(_two_free_ports()),
        "AIAAS_AZURITE_BLOB_PORT": str(free_port()),
        "AIAAS_AZURITE_QUEUE_PORT": str(free_port()),
        "AIAAS_AZURITE_TABLE_PORT": str(free_port()),
        "AIAAS_COSMOS_PORT": str(cosmos_port),
        "AIAAS_ALLOW_LOOPBACK_ENDPOINTS": "true",  # the test's webhook receivers listen on loopback
        "AIAAS_EVENT_TIME_SCALE": "3600",  # Event Grid's retry schedule in seconds, should a delivery fail
    }
    with (data_dir / "up.out").open("wb") as out:
        parent = subprocess.Popen(
            [str(REPO / ".venv/bin/aiaas"), "up", "--regions", "a,b", "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        stamps_file = data_dir / "stamps.json"
        deadline = time.monotonic() + 180
        while not stamps_file.is_file() and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        printed = (data_dir / "up.out").read_text()
        assert stamps_file.is_file(), printed
        api = {
            line.split()[1].rstrip(":"): line.split()[3]
            for line in printed.splitlines()
            if line.strip().startswith("region ")
        }
        assert set(api) == {"a", "b"} and api["a"] != api["b"], printed
        yield Stamps(env, api, json.loads(stamps_file.read_text()), cosmos_port)
    finally:
        if parent.poll() is None:
            parent.send_signal(signal.SIGTERM)
        try:
            parent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


def _create_tenant(stamps: Stamps, tenant_id: str, region: str) -> str:
    done = subprocess.run(
        [str(REPO / ".venv/bin/aiaas"), "tenants", "create", tenant_id, "--region", region, "--json"],
        env=stamps.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(json.loads(done.stdout)["apiKey"])


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _containers(stamps: Stamps, region: str) -> set[str]:
    """Every blob container of the stamp's two storage accounts (the tenants' and the platform's)."""
    names: set[str] = set()
    for setting in ("AIAAS_STORAGE_CONNECTION_STRING", "AIAAS_PLATFORM_STORAGE_CONNECTION_STRING"):
        service = BlobServiceClient.from_connection_string(stamps.stamp_env[region][setting])
        names |= {c.name for c in service.list_containers()}
    return names


def _documents_of(stamps: Stamps, region: str, tenant_id: str) -> dict[str, int]:
    """How many documents of the tenant each container of the stamp's Cosmos database holds."""
    client = make_cosmos_client(f"https://127.0.0.1:{stamps.cosmos_port}/", COSMOS_EMULATOR_KEY)
    db = client.get_database_client(stamps.stamp_env[region]["AIAAS_COSMOS_DATABASE"])
    counts = {}
    for name in TENANT_CONTAINERS:
        docs = db.get_container_client(name).query_items(
            "SELECT c.id FROM c WHERE c.tenantId = @t",
            parameters=[{"name": "@t", "value": tenant_id}],
            enable_cross_partition_query=True,
        )
        counts[name] = len(list(docs))
    return counts


def _directory_home(stamps: Stamps, tenant_id: str) -> dict[str, Any]:
    client = make_cosmos_client(f"https://127.0.0.1:{stamps.cosmos_port}/", COSMOS_EMULATOR_KEY)
    homes = client.get_database_client("aiaas-global").get_container_client("homes")
    return dict(homes.read_item(tenant_id, partition_key=tenant_id))


@pytest.mark.parametrize(("home", "other"), [("a", "b"), ("b", "a")])
def test_a_tenant_lives_entirely_in_its_home_stamp_and_the_other_refuses_it(
    stamps: Stamps, home: str, other: str
) -> None:
    tenant_id = f"resident-{home}"
    key = _create_tenant(stamps, tenant_id, home)
    assert {k: v for k, v in _directory_home(stamps, tenant_id).items() if not k.startswith("_")} | {
        "createdAt": ""
    } == {"id": tenant_id, "tenantId": tenant_id, "region": home, "apiUrl": stamps.api[home], "createdAt": ""}

    at_home = _client(stamps.api[home], key)
    with WebhookReceiver() as hook:
        created = at_home.post("/v1/subscriptions", json={"endpointUrl": hook.url})
        assert created.status_code == 201, created.text
        grant = at_home.post("/v1/uploads", json={"model": MODEL, "filename": "rows.jsonl"}).raise_for_status()
        # The upload URL names the home stamp's own storage account.
        assert f"/aiaas{home}/tenant-{tenant_id}/" in grant.json()["uploadUrl"]
        upload(at_home, MODEL, "rows.jsonl", SAMPLE.read_bytes())
        hook.wait_for(1, timeout=120)
        [event] = list(hook.events)
    data = event["data"]
    assert event["eventType"] == "AIaaS.Job.Succeeded" and data["region"] == home
    assert data["links"]["job"].startswith(stamps.api[home])
    job = at_home.get(f"/v1/jobs/{data['jobId']}").raise_for_status().json()
    assert job["region"] == home and job["status"] == "succeeded"
    results = all_results(at_home, data["jobId"], limit=100)
    assert len(results) == len(SAMPLE.read_text().splitlines()) and {r["region"] for r in results} == {home}

    # The other stamp refuses the key on every route, and says where the tenant lives; nothing answers 2xx.
    elsewhere = _client(stamps.api[other], key)
    for method, path, body in [
        ("GET", "/v1/jobs", None),
        ("GET", f"/v1/jobs/{data['jobId']}", None),
        ("GET", f"/v1/jobs/{data['jobId']}/results", None),
        ("POST", "/v1/uploads", {"model": MODEL, "filename": "x.jsonl"}),
        ("POST", "/v1/jobs", {"model": MODEL, "blobPath": data["input"]["blobPath"]}),
        ("POST", "/v1/subscriptions", {"endpointUrl": "https://example.org/hook"}),
        ("GET", "/v1/usage", None),
        ("GET", "/v1/audit", None),
        ("POST", "/v1/keys", {"name": "probe", "role": "AIaaS.Reader"}),
        ("GET", "/v1/models", None),
    ]:
        answer = elsewhere.request(method, path, json=body)
        assert answer.status_code == 421, (path, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "WrongRegion"
        assert answer.headers["AIaaS-Home-Api-Url"] == stamps.api[home]

    # Where the tenant's data is: all of it at home, none of it in the other stamp's accounts or database.
    assert f"tenant-{tenant_id}" in _containers(stamps, home)
    assert f"tenant-{tenant_id}" not in _containers(stamps, other)
    at_home_docs = _documents_of(stamps, home, tenant_id)
    assert at_home_docs["tenants"] >= 1 and at_home_docs["jobs"] >= 1 and at_home_docs["results"] >= 1
    assert at_home_docs["usage"] >= 1 and at_home_docs["subscriptions"] == 1
    assert _documents_of(stamps, other, tenant_id) == dict.fromkeys(TENANT_CONTAINERS, 0)


def test_a_tenant_is_made_in_one_stamp_only(stamps: Stamps) -> None:
    _create_tenant(stamps, "once-only", "a")
    again = subprocess.run(
        [str(REPO / ".venv/bin/aiaas"), "tenants", "create", "once-only", "--region", "b", "--json"],
        env=stamps.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "already lives in region a" in again.stderr
    assert _documents_of(stamps, "b", "once-only")["tenants"] == 0
    assert "tenant-once-only" not in _containers(stamps, "b")
