"""The BlobCreated trigger's parsing: which storage events become admissions, and with what blob."""

from __future__ import annotations

from typing import Any

import pytest

from functions.ingest import parse_blob_created

SUBJECT = "/blobServices/default/containers/tenant-acme/blobs/inbox/breast-cancer-classifier/2024/rows.jsonl"


def data(api: str = "PutBlob", **extra: Any) -> dict[str, Any]:
    return {
        "api": api,
        "eTag": '"0x8DC1234567890AB"',
        "contentLength": 5120,
        "contentType": "application/x-ndjson",
        "blobType": "BlockBlob",
        **extra,
    }


@pytest.mark.parametrize("api", ["PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"])
def test_a_committed_write_into_a_tenants_inbox_is_admitted(api: str) -> None:
    parsed = parse_blob_created(SUBJECT, data(api))

    assert parsed is not None
    tenant_id, info = parsed
    assert tenant_id == "acme"
    assert info.name == "inbox/breast-cancer-classifier/2024/rows.jsonl"
    assert info.etag == "0x8DC1234567890AB"  # quotes stripped, as the blob adapter hands ETags out
    assert info.size == 5120
    assert info.content_type == "application/x-ndjson"


@pytest.mark.parametrize("api", ["PutBlock", "AppendBlock", "PutPage", "SetBlobMetadata", "", None])
def test_a_partial_or_other_write_is_ignored(api: str | None) -> None:
    assert parse_blob_created(SUBJECT, data(api)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("/blobServices/default/containers/models/blobs/inbox/m/rows.jsonl", id="not-a-tenant"),
        pytest.param("/blobServices/default/containers/tenant-A_B/blobs/inbox/m/rows.jsonl", id="bad-tenant-id"),
        pytest.param("/blobServices/default/containers/tenant-acme/blobs/outbox/j/results.jsonl", id="outbox"),
        pytest.param("/blobServices/default/containers/tenant-acme/blobs/rows.jsonl", id="container-root"),
        pytest.param("/blobServices/default/containers/tenant-acme/blobs/inboxes/m/rows.jsonl", id="inboxes"),
        pytest.param("/blobServices/default/containers/tenant-acme", id="no-blob"),
        pytest.param("/something/else/containers/tenant-acme/blobs/inbox/m/rows.jsonl", id="foreign-subject"),
        pytest.param("", id="empty"),
    ],
)
def test_events_outside_a_tenants_inbox_are_ignored(subject: str) -> None:
    assert parse_blob_created(subject, data()) is None


def test_an_unquoted_or_missing_etag_and_length_are_tolerated() -> None:
    parsed = parse_blob_created(SUBJECT, {"api": "PutBlockList", "eTag": "0x1"})

    assert parsed is not None
    assert (parsed[1].etag, parsed[1].size, parsed[1].content_type) == ("0x1", 0, None)
