"""Regional stamps on the fakes: the directory places a tenant in one stamp, every other stamp refuses it with
421 WrongRegion before reading or writing anything of it, and what a stamp makes carries its region."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.errors import AlreadyExists, InvalidInput
from shared.domain.events import terminal_event
from shared.domain.jobs import Job, JobStatus, ResultPage
from shared.domain.regions import TenantHome
from shared.domain.tenants import new_api_key
from shared.domain.usage import UsageRecord
from shared.services.platform import Platform
from shared.services.queries import list_results
from shared.services.regions import HomeCache, check_home, place_tenant
from shared.services.tenants import create_tenant
from tests.fakes import InMemoryAuditLog, InMemoryBlobStore, InMemoryTenantDirectory, make_platform

A_URL, B_URL = "http://stamp-a.test/api", "http://stamp-b.test/api"


def stamp(region: str, api_url: str, directory: InMemoryTenantDirectory) -> Platform:
    return dataclasses.replace(make_platform(), region=region, api_url=api_url, directory=directory)


@pytest.fixture
def directory() -> InMemoryTenantDirectory:
    return InMemoryTenantDirectory()


@pytest.fixture
def stamps(directory: InMemoryTenantDirectory) -> tuple[Platform, Platform]:
    return stamp("a", A_URL, directory), stamp("b", B_URL, directory)


def make_tenant(platform: Platform, tenant_id: str) -> str:
    """As `aiaas tenants create` does: the directory first, then the tenant in its home stamp only."""
    place_tenant(platform, tenant_id)
    return create_tenant(platform, tenant_id)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_of_another_stamps_tenant_is_sent_home_and_nothing_of_it_is_read_or_written(
    stamps: tuple[Platform, Platform],
) -> None:
    a, b = stamps
    key = make_tenant(a, "acme")
    client_a = TestClient(create_app(lambda: a), raise_server_exceptions=False)
    client_b = TestClient(create_app(lambda: b), raise_server_exceptions=False)
    assert client_a.get("/api/v1/jobs", headers=auth(key)).status_code == 200

    blobs_b = b.blobs
    assert isinstance(blobs_b, InMemoryBlobStore)
    containers_before = set(blobs_b.containers)
    for method, path, body in [
        ("GET", "/api/v1/jobs", None),
        ("POST", "/api/v1/uploads", {"model": "m", "filename": "x.jsonl"}),
        ("POST", "/api/v1/subscriptions", {"endpointUrl": "https://example.org/hook"}),
        ("GET", "/api/v1/usage", None),
    ]:
        answer = client_b.request(method, path, json=body, headers=auth(key))
        assert answer.status_code == 421, (path, answer.text)
        assert answer.json()["error"]["code"] == "WrongRegion"
        assert A_URL in answer.json()["error"]["message"]
        assert answer.headers["AIaaS-Home-Api-Url"] == A_URL
        assert answer.headers["AIaaS-Home-Region"] == "a"

    assert [t.tenant_id for t in b.tenants.list_tenants()] == []
    assert set(blobs_b.containers) == containers_before and "tenant-acme" not in blobs_b.containers
    audit_b = b.audit
    assert isinstance(audit_b, InMemoryAuditLog)
    assert audit_b.entries == []  # not even the refusal: the tenant's audit log lives in stamp a


def test_a_token_of_another_stamps_tenant_is_sent_home_too(stamps: tuple[Platform, Platform]) -> None:
    import uuid

    import httpx

    from shared.api.auth import AuthOptions
    from tests.oidc_issuer import AUDIENCE, OidcIssuer

    a, b = stamps
    tid, unmapped = str(uuid.uuid4()), str(uuid.uuid4())
    place_tenant(a, "acme", entra_tenant=tid)
    create_tenant(a, "acme", entra_tenant=tid)
    issuer = OidcIssuer()
    clients = {}
    for plat in (a, b):
        app = create_app(
            lambda plat=plat: plat, auth=AuthOptions(entra_authority=issuer.base_url, entra_audience=AUDIENCE)
        )
        app.state.authenticate.verifier._http = httpx.Client(transport=issuer.mock_transport())
        clients[plat.region] = TestClient(app, raise_server_exceptions=False)
    token = issuer.token(tid, roles=["AIaaS.Reader"])
    assert clients["a"].get("/api/v1/jobs", headers=auth(token)).status_code == 200
    answer = clients["b"].get("/api/v1/jobs", headers=auth(token))
    assert answer.status_code == 421 and answer.headers["AIaaS-Home-Api-Url"] == A_URL
    # A valid token of a tid no stamp knows stays a plain 403.
    assert (
        clients["b"].get("/api/v1/jobs", headers=auth(issuer.token(unmapped, roles=["AIaaS.Reader"]))).status_code
        == 403
    )


def test_a_key_no_directory_entry_names_is_refused_as_before_in_every_stamp(
    stamps: tuple[Platform, Platform],
) -> None:
    _, b = stamps
    _, made_up = new_api_key("nobody", "k", "AIaaS.Admin", "2026-01-01T00:00:00Z")
    answer = TestClient(create_app(lambda: b), raise_server_exceptions=False).get("/api/v1/jobs", headers=auth(made_up))
    assert answer.status_code == 401
    assert "AIaaS-Home-Api-Url" not in answer.headers


def test_refusals_for_the_wrong_region_count_towards_the_failed_authentication_throttle(
    stamps: tuple[Platform, Platform],
) -> None:
    a, b = stamps
    key = make_tenant(a, "acme")
    app = create_app(lambda: b)
    app.state.authenticate.throttle.limit = 3
    client_b = TestClient(app, raise_server_exceptions=False)
    statuses = [client_b.get("/api/v1/jobs", headers=auth(key)).status_code for _ in range(4)]
    assert statuses == [421, 421, 421, 429]


def test_the_directory_keeps_a_tenants_first_home(stamps: tuple[Platform, Platform]) -> None:
    a, b = stamps
    make_tenant(a, "acme")
    with pytest.raises(AlreadyExists, match="already lives in region a"):
        place_tenant(b, "acme")
    assert [t.tenant_id for t in b.tenants.list_tenants()] == []
    with pytest.raises(AlreadyExists, match="serves region b, not a"):
        place_tenant(b, "newco", "a")
    assert place_tenant(a, "acme") == TenantHome("acme", "a", A_URL, a.directory.home_of("acme").created_at)  # type: ignore[union-attr]


def test_an_invalid_tenant_id_never_reaches_the_directory(
    stamps: tuple[Platform, Platform], directory: InMemoryTenantDirectory
) -> None:
    with pytest.raises(InvalidInput):
        place_tenant(stamps[0], "Not_A_Tenant")
    assert directory.homes == {}


def test_homes_are_cached_per_process_and_misses_are_not(
    stamps: tuple[Platform, Platform], directory: InMemoryTenantDirectory
) -> None:
    a, b = stamps
    cache = HomeCache()
    check_home(b, "later", cache)  # unknown: left to the stamp's own store
    make_tenant(a, "later")
    reads = directory.reads
    with pytest.raises(Exception, match="served by region a"):
        check_home(b, "later", cache)  # the miss was not cached: found at once
    for _ in range(5):
        check_home(a, "later", cache)
    assert directory.reads == reads + 1


def test_jobs_results_events_and_usage_carry_the_region_that_made_them(stamps: tuple[Platform, Platform]) -> None:
    a, _ = stamps
    job = Job("acme", "a" * 32, "m", "1", "inbox/m/x.jsonl", "0x1", region=a.region, status=JobStatus.SUCCEEDED)
    a.jobs.create_job(job)
    a.results.put_page(ResultPage("acme", job.job_id, 0, 0, 0, [{"recordIndex": 0, "id": "r0", "output": 1}], []))
    assert job.public_view(a.api_url)["region"] == "a"
    assert Job.from_doc(job.to_doc()).region == "a"
    assert terminal_event(job, a.api_url).data["region"] == "a"
    page = list_results(a, "acme", job.job_id, limit=10, continuation=None)
    assert page["region"] == "a" and [item["region"] for item in page["items"]] == ["a"]
    assert UsageRecord.from_doc(UsageRecord.of_job(job).to_doc()).region == "a"


# Settings


def test_a_production_stamp_must_say_its_region_and_development_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import Settings

    for name in list(os.environ):
        if name.startswith("AIAAS_"):
            monkeypatch.delenv(name)
    production = {
        "environment": "production",
        "storage_account_name": "st1",
        "platform_storage_account_name": "stp1",
        "cosmos_endpoint": "https://c.documents.azure.com:443/",
        "eventgrid_endpoint": "https://d.westeurope-1.eventgrid.azure.net/api/events",
        "public_api_url": "https://api.example.org/api",
        "callback_hosts": ".logic.azure.com",
        "relay_key": "a-relay-key-of-its-own",
    }
    with pytest.raises(ValueError, match="AIAAS_REGION is required"):
        Settings(**production, directory_endpoint="https://g.documents.azure.com:443/")
    with pytest.raises(ValueError, match="AIAAS_DIRECTORY_ENDPOINT must be the global tenant directory"):
        Settings(**production, region="westeurope")  # else it would serve every tenant, wherever it lives
    stamp = Settings(**production, region="westeurope", directory_endpoint="https://g.documents.azure.com:443/")
    assert stamp.region == "westeurope"
    with pytest.raises(ValueError):
        Settings(environment="development", region="West Europe")
    assert Settings(environment="development").region == "local"


# Local stamps (`aiaas up --regions`)


def test_local_stamps_get_their_own_accounts_database_and_next_port(tmp_path: Path) -> None:
    from shared.config import Settings
    from shared.localhost.emulators import Azurite
    from shared.localhost.stamps import plan_stamps

    settings = Settings(environment="development", api_port=7100, data_dir=tmp_path)
    a, b = plan_stamps(settings, ["a", "b"])
    assert (a.api_url, b.api_url) == ("http://127.0.0.1:7100/api", "http://127.0.0.1:7101/api")
    env_a, env_b = a.environment(), b.environment()
    assert (env_a["AIAAS_REGION"], env_a["AIAAS_COSMOS_DATABASE"]) == ("a", "aiaas-a")
    assert "AccountName=aiaasa;" in env_a["AIAAS_STORAGE_CONNECTION_STRING"]
    assert "AccountName=aiaaspb;" in env_b["AIAAS_PLATFORM_STORAGE_CONNECTION_STRING"]
    assert env_a["AIAAS_DIRECTORY_DATABASE"] == env_b["AIAAS_DIRECTORY_DATABASE"] == "aiaas-global"
    accounts = [account for stamp in (a, b) for account in stamp.accounts()]
    served = Azurite(data_dir=tmp_path, extra_accounts=accounts)._environment()["AZURITE_ACCOUNTS"]
    assert all(f"{name}:{key}" in served.split(";") for name, key in accounts)
    for bad in (["a", "a"], ["West"], [], ["a" * 13]):
        with pytest.raises(ValueError):
            plan_stamps(settings, bad)


# Bicep: each stamp only reads the directory


def _directory_role_findings(directory: Path) -> list[str]:
    from tests.unit.test_bicep_parse import parse_dir

    parsed = {p["path"]: p for p in parse_dir(directory)}
    reader = parsed["modules/directory-reader.bicep"]
    [assignment] = [r for r in reader["resources"] if r["type"].endswith("/sqlRoleAssignments")]
    out = []
    if reader["variables"].get("cosmosDataReaderRoleId") != "00000000-0000-0000-0000-000000000001":
        out.append("a stamp's directory role is not Cosmos DB Built-in Data Reader")
    if "/dbs/" not in str(assignment["body"]["properties"]["scope"]):
        out.append("a stamp's directory role is not scoped to the directory's database")
    main = (directory / "main.bicep").read_text()
    if "modules/directory-reader.bicep" not in main or "AIAAS_REGION" not in main:
        out.append("main.bicep neither grants the stamp the directory nor says its region")
    return out


def test_each_stamp_reads_the_directory_and_nothing_more() -> None:
    from tests.unit.test_bicep_parse import BICEP_DIR

    assert _directory_role_findings(BICEP_DIR) == []


def test_a_stamp_that_could_write_the_directory_is_reported(tmp_path: Path) -> None:
    from tests.unit.test_bicep_parse import broken_copy

    copy = broken_copy(
        tmp_path,
        "modules/directory-reader.bicep",
        "var cosmosDataReaderRoleId = '00000000-0000-0000-0000-000000000001'",
        "var cosmosDataReaderRoleId = '00000000-0000-0000-0000-000000000002'",
    )
    assert _directory_role_findings(copy) == ["a stamp's directory role is not Cosmos DB Built-in Data Reader"]
