"""Job metadata over the fakes: checked at the API, kept through the upload intent, echoed in the job and its events."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.errors import InvalidInput
from shared.domain.jobs import Job, validate_metadata
from shared.domain.tenants import ADMIN, container_for
from shared.services.ingest import admit_blob_created, create_upload
from shared.services.platform import Platform
from shared.services.shards import run_shard
from shared.services.tenants import create_key
from tests.fakes import MODEL_NAME, fakes_of, sample_bytes, upload

ROUTING = {"costCentre": "cc-42", "team.name": "risk_ops-1", "empty": ""}


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


@pytest.fixture
def headers(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(platform, 'acme', 'tests', ADMIN)[1]}"}


def rows(count: int = 5) -> bytes:
    return b"".join(sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)[:count])


def run_all(platform: Platform) -> None:
    while messages := fakes_of(platform).queue.drain():
        for message in messages:
            run_shard(platform, message)


def job_events(platform: Platform, job_id: str) -> list[Any]:
    return [e for e in fakes_of(platform).events.events if e.data.get("jobId") == job_id]


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},  # 17 pairs
        {"": "v"},
        {"k" * 65: "v"},
        {"has space": "v"},
        {"slash/key": "v"},
        {"k": "v" * 257},
        {"k": 1},
        {"k": None},
        {"k": {"nested": "v"}},
        ["k", "v"],
        "k=v",
    ],
)
def test_bad_metadata_is_refused_with_invalid_metadata(
    client: TestClient, headers: dict[str, str], platform: Platform, metadata: Any
) -> None:
    upload(platform, "acme", "data/rows.jsonl", rows())
    for url, body in [
        ("/api/v1/uploads", {"model": MODEL_NAME, "filename": "rows.jsonl", "metadata": metadata}),
        ("/api/v1/jobs", {"model": MODEL_NAME, "blobPath": "data/rows.jsonl", "metadata": metadata}),
    ]:
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["error"]["code"] == "InvalidMetadata", response.text
    with pytest.raises(InvalidInput) as err:
        validate_metadata(metadata)
    assert err.value.code == "InvalidMetadata"
    assert fakes_of(platform).jobs.docs == {} or all(
        not doc.get("metadata") for doc in fakes_of(platform).jobs.docs.values()
    )


def test_the_limits_themselves_are_accepted() -> None:
    most = {f"k{i:02d}" + "x" * 60: "v" * 256 for i in range(16)}
    assert validate_metadata(most) == most
    assert validate_metadata(None) == {}


def test_a_job_submitted_with_metadata_echoes_it_in_its_view_and_its_event(
    client: TestClient, headers: dict[str, str], platform: Platform
) -> None:
    upload(platform, "acme", "data/rows.jsonl", rows())
    response = client.post(
        "/api/v1/jobs", json={"model": MODEL_NAME, "blobPath": "data/rows.jsonl", "metadata": ROUTING}, headers=headers
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    assert response.json()["metadata"] == ROUTING
    run_all(platform)
    view = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
    assert view["status"] == "succeeded" and view["metadata"] == ROUTING
    listed = client.get("/api/v1/jobs", headers=headers).json()["items"]
    assert [item["metadata"] for item in listed if item["jobId"] == job_id] == [ROUTING]
    (event,) = job_events(platform, job_id)
    assert event.event_type == "AIaaS.Job.Succeeded" and event.data["metadata"] == ROUTING


def test_an_uploads_metadata_reaches_the_job_the_blob_trigger_admits(
    client: TestClient, headers: dict[str, str], platform: Platform
) -> None:
    answer = client.post(
        "/api/v1/uploads", json={"model": MODEL_NAME, "filename": "rows.jsonl", "metadata": ROUTING}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    path = answer.json()["blobPath"]
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, rows()))
    assert job is not None and job.metadata == ROUTING
    run_all(platform)
    (event,) = job_events(platform, job.job_id)
    assert event.data["metadata"] == ROUTING


def test_a_rejected_upload_carries_its_metadata_in_the_rejection(platform: Platform) -> None:
    answer = create_upload(platform, "acme", MODEL_NAME, "rows.jsonl", metadata={"route": "a"})
    path = answer["blobPath"]
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, b""))  # empty: rejected
    assert job is not None and job.status.value == "rejected"
    (event,) = job_events(platform, job.job_id)
    assert event.event_type == "AIaaS.Job.Rejected" and event.data["metadata"] == {"route": "a"}


def test_a_job_without_metadata_shows_an_empty_object(platform: Platform) -> None:
    path = f"inbox/{MODEL_NAME}/plain.jsonl"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, rows()))
    assert isinstance(job, Job)
    run_all(platform)
    assert job.public_view("http://x/api")["metadata"] == {}
    (event,) = job_events(platform, job.job_id)
    assert event.data["metadata"] == {}
    assert platform.blobs.read_bytes(container_for("acme"), f"outbox/{job.job_id}/results.jsonl")
