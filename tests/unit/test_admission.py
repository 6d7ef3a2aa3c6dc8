"""Admission: an upload (BlobCreated) or an API call becomes exactly one job, or one rejection a person can see."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from shared.domain.errors import InvalidInput
from shared.domain.jobs import JobStatus
from shared.domain.tenants import Tenant
from shared.services.ingest import admit_blob_created, create_upload, submit_job
from shared.services.platform import Platform
from tests.fakes import MODEL_NAME, MODELS_DIR, Fakes, add_tenant, make_platform, sample_bytes, upload

ROWS = b'{"id": "r1", "mean radius": 1}\n'


def inbox(name: str = "rows.jsonl", model: str = MODEL_NAME) -> str:
    return f"inbox/{model}/{name}"


def test_the_same_event_three_times_makes_one_job_and_enqueues_once(platform: Platform, fakes: Fakes) -> None:
    path = inbox()
    info = upload(platform, "acme", path, sample_bytes("breast-cancer.jsonl"))

    jobs = [admit_blob_created(platform, "acme", path, info) for _ in range(3)]

    assert all(job is not None for job in jobs)
    assert len({job.job_id for job in jobs if job}) == 1
    assert len(fakes.jobs.docs) == 1
    assert len(fakes.queue.messages) == 1
    message = fakes.queue.messages[0]
    assert (message.tenant_id, message.job_id, message.shard_index) == ("acme", jobs[0].job_id, 0)
    stored = platform.jobs.get_job("acme", jobs[0].job_id)
    assert stored.status == JobStatus.QUEUED
    assert (stored.model_name, stored.model_version) == (MODEL_NAME, "1")
    assert stored.etag == info.etag
    assert fakes.events.events == []


def test_an_overwrite_with_a_new_etag_makes_a_new_job(platform: Platform, fakes: Fakes) -> None:
    path = inbox()
    first = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, ROWS))
    second_info = upload(platform, "acme", path, ROWS + ROWS)
    second = admit_blob_created(platform, "acme", path, second_info)

    assert first is not None and second is not None
    assert first.job_id != second.job_id
    assert second.etag == second_info.etag
    assert len(fakes.jobs.docs) == 2
    assert [m.job_id for m in fakes.queue.messages] == [first.job_id, second.job_id]


REJECTIONS = [
    pytest.param(inbox(model="no-such-model"), ROWS, "UnknownModel", id="unknown-model"),
    pytest.param(inbox(model=f"{MODEL_NAME}@7"), ROWS, "UnknownModel", id="unknown-version"),
    pytest.param(inbox("scan.png"), b"\x89PNG....", "UnsupportedFileType", id="unsupported-type"),
    pytest.param(inbox("noext"), ROWS, "UnsupportedFileType", id="no-extension"),
    pytest.param(inbox("empty.jsonl"), b"", "EmptyInput", id="empty-file"),
    pytest.param("uploads/rows.jsonl", ROWS, "NotAnInboxPath", id="not-under-inbox"),
    pytest.param(f"inbox/{MODEL_NAME}", ROWS, "NotAnInboxPath", id="no-file-under-model"),
]


@pytest.mark.parametrize(("path", "data", "code"), REJECTIONS)
def test_an_upload_the_platform_cannot_run_ends_as_one_rejected_job_with_one_event(
    platform: Platform, fakes: Fakes, path: str, data: bytes, code: str
) -> None:
    info = upload(platform, "acme", path, data)

    jobs = [admit_blob_created(platform, "acme", path, info) for _ in range(3)]

    assert jobs[0] is not None
    assert {job.job_id for job in jobs if job} == {jobs[0].job_id}
    job = platform.jobs.get_job("acme", jobs[0].job_id)
    assert job.status == JobStatus.REJECTED
    assert job.error is not None and job.error["code"] == code
    assert job.event_published
    assert fakes.queue.messages == []
    events = fakes.events.events
    assert len(events) == 1
    event = events[0]
    assert event.event_type == "AIaaS.Job.Rejected"
    assert event.topic == "acme"
    assert event.subject == f"/tenants/acme/jobs/{job.job_id}"
    assert event.data["status"] == "rejected"
    assert event.data["error"]["code"] == code
    assert event.data["error"]["message"]
    assert event.data["input"] == {"blobPath": path, "etag": info.etag}


def test_a_file_over_max_upload_bytes_is_rejected_as_too_large() -> None:
    platform = make_platform(max_upload_bytes=100)
    add_tenant(platform, "acme")
    path = inbox()
    info = upload(platform, "acme", path, b'{"x": 1}\n' * 20)

    job = admit_blob_created(platform, "acme", path, info)
    admit_blob_created(platform, "acme", path, info)

    assert job is not None and job.status == JobStatus.REJECTED
    assert job.error is not None and job.error["code"] == "FileTooLarge"
    events = platform.events.events  # type: ignore[attr-defined]
    assert [e.data["error"]["code"] for e in events] == ["FileTooLarge"]
    assert platform.queue.messages == []  # type: ignore[attr-defined]


def test_an_upload_for_an_unknown_tenant_is_ignored(platform: Platform, fakes: Fakes) -> None:
    path = inbox()
    info = upload(platform, "ghost", path, ROWS)

    assert admit_blob_created(platform, "ghost", path, info) is None
    assert fakes.jobs.docs == {} and fakes.queue.messages == [] and fakes.events.events == []


def test_an_upload_for_a_suspended_tenant_is_ignored(platform: Platform, fakes: Fakes) -> None:
    tenant = platform.tenants.get_tenant("acme")
    platform.tenants.replace_tenant(Tenant(**{**tenant.__dict__, "status": "suspended"}))
    path = inbox()
    info = upload(platform, "acme", path, ROWS)

    assert admit_blob_created(platform, "acme", path, info) is None
    assert fakes.jobs.docs == {} and fakes.queue.messages == [] and fakes.events.events == []


@pytest.mark.parametrize("selector", ["@1", "@production", ""])
def test_a_version_or_alias_in_the_inbox_path_resolves(platform: Platform, fakes: Fakes, selector: str) -> None:
    path = inbox(model=f"{MODEL_NAME}{selector}")
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, ROWS))

    assert job is not None and job.status == JobStatus.QUEUED
    assert (job.model_name, job.model_version) == (MODEL_NAME, "1")
    assert len(fakes.queue.messages) == 1


def test_the_same_blob_by_version_or_by_alias_is_one_job(platform: Platform, fakes: Fakes) -> None:
    """The job id hashes the resolved version, so naming it twice (event and API) runs it once."""
    path = inbox("sub/dir/rows.jsonl")
    info = upload(platform, "acme", path, ROWS)

    by_event = admit_blob_created(platform, "acme", path, info)
    by_api = submit_job(platform, "acme", f"{MODEL_NAME}@1", path)

    assert by_event is not None and by_api.job_id == by_event.job_id
    assert len(fakes.queue.messages) == 1


# The API callers get their mistakes as InvalidInput, not as rejected jobs.


def test_submit_job_runs_a_blob_already_in_the_container(platform: Platform, fakes: Fakes) -> None:
    upload(platform, "acme", "data/rows.csv", sample_bytes("breast-cancer.csv"))

    job = submit_job(platform, "acme", MODEL_NAME, "data/rows.csv")

    assert job.status == JobStatus.QUEUED and job.file_type == ".csv"
    assert [m.job_id for m in fakes.queue.messages] == [job.job_id]


@pytest.mark.parametrize(
    ("model", "blob_path", "code"),
    [
        pytest.param("no-such-model", "data/rows.jsonl", "UnknownModel", id="unknown-model"),
        pytest.param(f"{MODEL_NAME}@9", "data/rows.jsonl", "UnknownModel", id="unknown-version"),
        pytest.param("Bad Name!", "data/rows.jsonl", "InvalidModelName", id="bad-model-name"),
        pytest.param(MODEL_NAME, "data/rows.txt", "UnsupportedFileType", id="wrong-extension"),
        pytest.param(MODEL_NAME, "outbox/abc/results.jsonl", "InvalidBlobPath", id="outbox"),
        pytest.param(MODEL_NAME, "data/../outbox/abc/results.jsonl", "InvalidBlobPath", id="dot-dot"),
        pytest.param(MODEL_NAME, "data/missing.jsonl", "BlobNotFound", id="missing-blob"),
        pytest.param(MODEL_NAME, "data/empty.jsonl", "EmptyInput", id="empty"),
    ],
)
def test_submit_job_refuses_with_invalid_input_and_records_nothing(
    platform: Platform, fakes: Fakes, model: str, blob_path: str, code: str
) -> None:
    for path in ("data/rows.jsonl", "data/rows.txt", "outbox/abc/results.jsonl", "data/../outbox/abc/results.jsonl"):
        upload(platform, "acme", path, ROWS)
    upload(platform, "acme", "data/empty.jsonl", b"")

    with pytest.raises(InvalidInput) as raised:
        submit_job(platform, "acme", model, blob_path)

    assert raised.value.code == code
    assert fakes.jobs.docs == {} and fakes.queue.messages == [] and fakes.events.events == []


def test_submit_job_cannot_reach_another_tenants_blob(platform: Platform, fakes: Fakes) -> None:
    add_tenant(platform, "other")
    upload(platform, "other", "data/rows.jsonl", ROWS)

    with pytest.raises(InvalidInput) as raised:
        submit_job(platform, "acme", MODEL_NAME, "data/rows.jsonl")

    assert raised.value.code == "BlobNotFound"
    assert fakes.jobs.docs == {}


def test_create_upload_gives_a_url_for_one_new_blob_in_the_callers_inbox(platform: Platform, fakes: Fakes) -> None:
    answer = create_upload(platform, "acme", f"{MODEL_NAME}@1", "rows (2).jsonl")

    blob_path = answer["blobPath"]
    assert blob_path.startswith(f"inbox/{MODEL_NAME}@1/") and blob_path.endswith("/rows (2).jsonl")
    assert answer["expiresAt"].endswith("Z")
    assert fakes.blobs.upload_urls == [("tenant-acme", blob_path, platform.upload_ttl)]
    assert "tenant-acme" in answer["uploadUrl"] and blob_path in answer["uploadUrl"]
    again = create_upload(platform, "acme", f"{MODEL_NAME}@1", "rows (2).jsonl")
    assert again["blobPath"] != blob_path  # two uploads of the same name never overwrite each other


@pytest.mark.parametrize(
    ("model", "filename", "code"),
    [
        pytest.param("no-such-model", "rows.jsonl", "UnknownModel", id="unknown-model"),
        pytest.param(f"{MODEL_NAME}@2", "rows.jsonl", "UnknownModel", id="unknown-version"),
        pytest.param(MODEL_NAME, "../rows.jsonl", "InvalidFilename", id="slash-dot-dot"),
        pytest.param(MODEL_NAME, "a/b.jsonl", "InvalidFilename", id="slash"),
        pytest.param(MODEL_NAME, "..", "InvalidFilename", id="dot-dot"),
        pytest.param(MODEL_NAME, "", "InvalidFilename", id="empty"),
        pytest.param(MODEL_NAME, "x" * 201 + ".csv", "InvalidFilename", id="too-long"),
        pytest.param(MODEL_NAME, "rows.txt", "UnsupportedFileType", id="wrong-extension"),
        pytest.param(MODEL_NAME, "rows", "UnsupportedFileType", id="no-extension"),
    ],
)
def test_create_upload_refuses_with_invalid_input(
    platform: Platform, fakes: Fakes, model: str, filename: str, code: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        create_upload(platform, "acme", model, filename)

    assert raised.value.code == code
    assert fakes.blobs.upload_urls == []


def _zip_of(entries: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(entries):
            archive.writestr(f"d/{i}.png", b"")
    return buffer.getvalue()


def _with_digits(**policy: Any) -> Platform:
    platform = make_platform(**policy)
    package = MODELS_DIR / "digits-classifier" / "1"
    if not (package / "card.json").is_file():
        pytest.skip("digits-classifier is not built: run `make models`")
    platform.models.publish_package(package)  # type: ignore[attr-defined]
    add_tenant(platform, "acme")
    return platform


@pytest.mark.parametrize(
    ("name", "data", "policy", "code", "says"),
    [
        pytest.param(
            "big.zip", _zip_of(3), {"max_archive_bytes": 100}, "ArchiveTooLarge", "cannot be split", id="bytes"
        ),
        pytest.param("many.zip", _zip_of(6), {"max_archive_entries": 5}, "ArchiveTooLarge", "6 entries", id="entries"),
        pytest.param("zip64.zip", _zip_of(70_000), {}, "ArchiveTooLarge", "70000 entries", id="zip64-entries"),
        pytest.param(
            "huge.png", b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024), {}, "FileTooLarge", "image", id="image"
        ),
    ],
)
def test_an_archive_or_image_too_big_for_one_shard_is_rejected_before_any_work(
    name: str, data: bytes, policy: dict[str, int], code: str, says: str
) -> None:
    """A .zip or an image is one shard: over the bounds it could not finish inside the shard timeout."""
    platform = _with_digits(**policy)
    path = f"inbox/digits-classifier/{name}"

    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))

    assert job is not None and job.status == JobStatus.REJECTED
    assert job.error is not None and job.error["code"] == code and says in job.error["message"]
    [event] = platform.events.events  # type: ignore[attr-defined]
    assert event.event_type == "AIaaS.Job.Rejected" and event.data["error"]["code"] == code
    assert platform.queue.messages == []  # type: ignore[attr-defined]


def test_an_archive_within_the_bounds_is_admitted_and_dispatched() -> None:
    platform = _with_digits(max_archive_entries=5)
    path = "inbox/digits-classifier/ok.zip"

    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, _zip_of(5)))

    assert job is not None and job.status == JobStatus.QUEUED
    assert [m.job_id for m in platform.queue.messages] == [job.job_id]  # type: ignore[attr-defined]
