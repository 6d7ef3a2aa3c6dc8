"""Blob paths a tenant supplies stay in its own container; blobs a copy wrote are never run or registered."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.blobpaths import MAX_BLOB_NAME_CHARS, MAX_BLOB_NAME_SEGMENTS, TenantBlob, parse_tenant_blob_path
from shared.domain.errors import InvalidInput
from shared.domain.jobs import JobStatus
from shared.domain.tenants import container_for
from shared.ports import BlobInfo
from shared.services.ingest import admit_blob_created, submit_job
from shared.services.platform import Platform
from tests.fakes import MODEL_NAME, Fakes, add_tenant, fakes_of, make_platform, upload
from tests.unit.test_api import assert_error, auth
from tests.unit.test_registry import tiny_card, tiny_onnx

ROWS = b'{"id": "r1", "mean radius": 1}\n'
OTHER_OUTBOX = "../tenant-globex/outbox/0123456789abcdef0123456789abcdef/results.jsonl"


@pytest.fixture
def platform() -> Platform:
    return make_platform()


@pytest.fixture
def fakes(platform: Platform) -> Fakes:
    return fakes_of(platform)


@pytest.fixture
def acme_key(platform: Platform) -> str:
    return add_tenant(platform, "acme")


REFUSED = [
    pytest.param("", id="empty"),
    pytest.param("/tenant-globex/inbox/m/x.jsonl", id="leading-slash"),
    pytest.param(OTHER_OUTBOX, id="dot-dot-into-another-container"),
    pytest.param("data/../../tenant-globex/x.jsonl", id="dot-dot-deeper"),
    pytest.param("data/./rows.jsonl", id="dot"),
    pytest.param("data//rows.jsonl", id="empty-segment"),
    pytest.param("data/rows.jsonl/", id="trailing-slash"),
    pytest.param("%2e%2e/tenant-globex/x.jsonl", id="percent-encoded-dot-dot"),
    pytest.param("data/%2E%2E/x.jsonl", id="percent-encoded-upper"),
    pytest.param("..\\tenant-globex\\x.jsonl", id="backslash"),
    pytest.param("data/rows\x00.jsonl", id="nul"),
    pytest.param("data/rows\n.jsonl", id="newline"),
    pytest.param("data/rows\x85.jsonl", id="c1-control"),
    pytest.param("data/...", id="dots-only-segment"),
    pytest.param("a" * (MAX_BLOB_NAME_CHARS + 1), id="over-1024-characters"),
    pytest.param("/".join(["a"] * (MAX_BLOB_NAME_SEGMENTS + 1)), id="over-254-segments"),
]


@pytest.mark.parametrize("path", REFUSED)
def test_a_path_out_of_the_container_or_not_a_plain_blob_name_is_refused_with_a_reason(path: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_tenant_blob_path("acme", path)
    assert raised.value.code == "InvalidBlobPath"
    assert "refused: " in raised.value.message and len(raised.value.message) < 300


@pytest.mark.parametrize(
    "path",
    [
        "data/rows.jsonl",
        "inbox/model@2/sub dir/(1) rows.csv",
        "tenant-globex/rows.jsonl",  # a folder of the caller's own container, whatever it is called
        "a" * MAX_BLOB_NAME_CHARS,
        "/".join(["a"] * MAX_BLOB_NAME_SEGMENTS),
        "données/日本.jsonl",
    ],
)
def test_a_plain_blob_name_is_always_in_the_callers_own_container(path: str) -> None:
    assert parse_tenant_blob_path("acme", path) == TenantBlob("tenant-acme", path)


@pytest.mark.parametrize("path", [p.values[0] for p in REFUSED if p.values[0]])
def test_submit_job_refuses_the_path_as_400_and_reads_nothing(
    platform: Platform, fakes: Fakes, acme_key: str, path: str
) -> None:
    add_tenant(platform, "globex")
    upload(platform, "globex", OTHER_OUTBOX.removeprefix("../tenant-globex/"), ROWS)
    client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)

    answer = client.post("/api/v1/jobs", json={"model": MODEL_NAME, "blobPath": path}, headers=auth(acme_key))

    assert_error(answer, 400, "InvalidRequest" if len(path) > MAX_BLOB_NAME_CHARS else "InvalidBlobPath")
    assert fakes.jobs.docs == {} and fakes.queue.messages == [] and fakes.events.events == []


def test_an_inbox_blob_a_copy_wrote_ends_as_one_rejection_and_nothing_is_read(
    platform: Platform, fakes: Fakes, acme_key: str
) -> None:
    add_tenant(platform, "globex")
    upload(platform, "globex", f"inbox/{MODEL_NAME}/u1/rows.jsonl", ROWS)
    path = f"inbox/{MODEL_NAME}/u2/rows.jsonl"
    source = f"http://127.0.0.1:10000/devstoreaccount1/tenant-globex/inbox/{MODEL_NAME}/u1/rows.jsonl"
    etag = fakes.blobs.copy_blob(container_for("acme"), path, source, ROWS)
    event = BlobInfo(path, etag, len(ROWS), "application/octet-stream")  # what a BlobCreated event carries
    reads: list[str] = []
    real_iter_chunks = fakes.blobs.iter_chunks
    fakes.blobs.iter_chunks = lambda *a, **k: reads.append(a[1]) or real_iter_chunks(*a, **k)  # type: ignore[method-assign]

    jobs = [admit_blob_created(platform, "acme", path, event) for _ in range(2)]

    assert jobs[0] is not None and {j.job_id for j in jobs if j} == {jobs[0].job_id}
    job = platform.jobs.get_job("acme", jobs[0].job_id)
    assert job.status == JobStatus.REJECTED and job.error and job.error["code"] == "CopiedBlobRefused"
    assert [e.event_type for e in fakes.events.events] == ["AIaaS.Job.Rejected"]
    assert fakes.queue.messages == [] and reads == []


def test_submit_job_over_a_copied_blob_is_400(platform: Platform, fakes: Fakes, acme_key: str) -> None:
    fakes.blobs.copy_blob(container_for("acme"), "data/rows.jsonl", "http://x/tenant-globex/inbox/m/r.jsonl", ROWS)

    with pytest.raises(InvalidInput) as raised:
        submit_job(platform, "acme", MODEL_NAME, "data/rows.jsonl")

    assert raised.value.code == "CopiedBlobRefused"
    assert fakes.jobs.docs == {} and fakes.events.events == []


def test_a_model_artifact_a_copy_wrote_is_not_registered(platform: Platform, fakes: Fakes, acme_key: str) -> None:
    client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)
    source = "http://127.0.0.1:10000/devstoreaccount1/models/tenants/globex/churn/1/model.onnx"
    fakes.blobs.copy_blob(container_for("acme"), "stolen.onnx", source, tiny_onnx())
    body = {"card": tiny_card("churn"), "artifactBlobPath": "stolen.onnx"}

    answer = client.post("/api/v1/models", json=body, headers=auth(acme_key))

    assert_error(answer, 400, "CopiedBlobRefused")
    assert "churn" not in [m["name"] for m in platform.models.list_models("acme")]


@pytest.mark.parametrize("path", ["../tenant-globex/model.onnx", "%2e%2e/tenant-globex/model.onnx", "a/./b.onnx"])
def test_an_artifact_path_out_of_the_container_is_400(platform: Platform, acme_key: str, path: str) -> None:
    add_tenant(platform, "globex")
    platform.blobs.write_bytes(container_for("globex"), "model.onnx", tiny_onnx())
    client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)

    answer = client.post(
        "/api/v1/models",
        json={"card": tiny_card("churn"), "artifactBlobPath": path},
        headers=auth(acme_key),
    )

    assert_error(answer, 400, "InvalidBlobPath")


def test_the_local_watcher_names_a_copied_blob_copyblob_as_the_storage_system_topic_does(fakes: Fakes) -> None:
    from shared.localhost.watcher import InboxWatcher

    fakes.blobs.write_bytes("tenant-acme", f"inbox/{MODEL_NAME}/u1/rows.jsonl", ROWS)
    fakes.blobs.copy_blob("tenant-acme", f"inbox/{MODEL_NAME}/u2/rows.jsonl", "http://x/tenant-globex/a.jsonl", ROWS)
    delivered: list[tuple[str, str]] = []
    watcher = InboxWatcher(
        fakes.blobs,
        lambda event: delivered.append((event.subject.rsplit("/blobs/", 1)[1], event.get_json()["api"])),
        account="devstoreaccount1",
        blob_endpoint="http://127.0.0.1:10000/devstoreaccount1",
    )

    assert watcher.scan() == 2
    assert sorted(delivered) == [
        (f"inbox/{MODEL_NAME}/u1/rows.jsonl", "PutBlob"),
        (f"inbox/{MODEL_NAME}/u2/rows.jsonl", "CopyBlob"),
    ]
