"""Bad uploads on the local stack: each ends as one event whose error code says what to fix; nothing hangs."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shared.bootstrap import build_platform_blobs, get_platform
from shared.config import get_settings
from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver
from tests.e2e._api import all_results, without_region

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "build/samples"


def _bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("innocent.png", b"\0" * (60 * 1024 * 1024))  # 60 MB of zeros, about 60 KB packed
    return buffer.getvalue()


def _drop(tenant: str, path: str, content: bytes) -> None:
    get_platform().blobs.write_bytes(f"tenant-{tenant}", path, content)


def test_every_kind_of_bad_file_ends_with_a_reason(create_tenant: Callable[[str], httpx.Client]) -> None:
    api = create_tenant("badfiles")
    digits = (SAMPLES / "digits.zip").read_bytes()
    row = (SAMPLES / "breast-cancer.jsonl").read_bytes().splitlines()[0]
    csv_head = (SAMPLES / "breast-cancer.csv").read_bytes().splitlines()[0]
    cases = {
        "inbox/breast-cancer-classifier/x/empty.jsonl": (b"", "AIaaS.Job.Rejected", "EmptyInput"),
        "inbox/breast-cancer-classifier/x/notes.txt": (b"hello", "AIaaS.Job.Rejected", "UnsupportedFileType"),
        "inbox/no-such-model/x/rows.jsonl": (row, "AIaaS.Job.Rejected", "UnknownModel"),
        "inbox/breast-cancer-classifier/x/latin1.csv": (
            csv_head + b"\n" + b"caf\xe9," * 29 + b"1\n",
            "AIaaS.Job.Failed",
            "BadEncoding",
        ),
        "inbox/digits-classifier/x/truncated.zip": (digits[: len(digits) // 2], "AIaaS.Job.Failed", "CorruptArchive"),
        "inbox/digits-classifier/x/bomb.zip": (_bomb(), "AIaaS.Job.Failed", "ZipBomb"),
        "inbox/breast-cancer-classifier/x/one-huge-line.jsonl": (
            b'{"pad": "' + b"x" * (100 * 1024 * 1024) + b'"}\n',
            "AIaaS.Job.Failed",
            "LineTooLong",
        ),
        "inbox/digits-classifier/x/not-an-image.png": (b"this is text", "AIaaS.Job.Failed", "AllRecordsFailed"),
        "inbox/breast-cancer-classifier/x/all-broken.jsonl": (b"{}\n[1]\n", "AIaaS.Job.Failed", "AllRecordsFailed"),
    }
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        for path, (content, _, _) in cases.items():
            _drop("badfiles", path, content)
        events = hook.wait_for(len(cases), timeout=180)
        time.sleep(1)
        assert len(hook.events) == len(cases), "one event per bad file, no more"
    outcome = {e["data"]["input"]["blobPath"]: (e["eventType"], e["data"]["error"]["code"]) for e in events}
    assert outcome == {path: (kind, code) for path, (_, kind, code) in cases.items()}
    messages = {e["data"]["input"]["blobPath"]: e["data"]["error"]["message"] for e in events}
    assert "not an image" in messages["inbox/digits-classifier/x/not-an-image.png"]
    assert "UTF-8" in messages["inbox/breast-cancer-classifier/x/latin1.csv"]
    jobs = api.get("/v1/jobs", params={"limit": 50}).json()["items"]
    assert {j["status"] for j in jobs} == {"rejected", "failed"} and len(jobs) == len(cases)


def test_a_shard_that_keeps_failing_ends_its_job_after_bounded_deliveries(
    create_tenant: Callable[[str], httpx.Client],
) -> None:
    api = create_tenant("fragile")
    blobs = build_platform_blobs(get_settings())  # models live in the platform's own account
    card = json.loads((REPO / "build/models/breast-cancer-classifier/1/card.json").read_text())
    card["name"] = "fragile-model"
    # The artifact no longer matches the card's sha256: every delivery fails to load it.
    blobs.write_bytes("models", "fragile-model/1/model.onnx", b"not the model the card describes")
    blobs.write_bytes("models", "fragile-model/1/card.json", json.dumps(card).encode())
    blobs.write_bytes("models", "fragile-model/aliases.json", json.dumps({"aliases": {"production": "1"}}).encode())
    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        deadline = time.monotonic() + 30
        while api.post("/v1/uploads", json={"model": "fragile-model", "filename": "a.jsonl"}).status_code != 201:
            assert time.monotonic() < deadline, "the registry never listed the new model"
            time.sleep(0.5)
        _drop("fragile", "inbox/fragile-model/x/rows.jsonl", (SAMPLES / "breast-cancer.jsonl").read_bytes())
        [event] = hook.wait_for(1, timeout=120)
    assert event["eventType"] == "AIaaS.Job.Failed"
    assert event["data"]["error"]["code"] == "ShardFailed"
    assert "sha256" in event["data"]["error"]["message"]


def test_a_csv_with_quoted_newlines_split_into_shards_gives_every_record_once_with_its_index(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    """RFC 4180: a quoted id spans lines. The file is several 256 KiB shards, so some cuts would fall inside a
    quoted field if the planner cut at any newline; bad rows are errors at the line where they start."""
    api = create_tenant("quotedcsv")
    rows = [json.loads(line) for line in (SAMPLES / "breast-cancer.jsonl").read_text().splitlines()]
    features = [name for name in rows[0] if name not in ("id", "expected")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["id", *features])
    count, line, expected, bad = 4500, 2, {}, {}
    for index in range(count):
        record_id = f'record {index}\nsays "hi", then\r\nends' if index % 3 else f"record {index}"
        values = [rows[index % len(rows)][name] for name in features]
        if index % 700 == 699:
            values[7] = 1e39  # beyond float32: a record error naming the feature, never a silent inf
            bad[index] = (line, features[7])
        elif index % 997 == 996:
            values = values[:5]  # too few fields
            bad[index] = (line, None)
        else:
            expected[index] = record_id
        writer.writerow([record_id, *values])
        line += 1 + record_id.count("\n")
    bad[count] = (line, None)
    data = buffer.getvalue().encode() + b'"never closed,1,2\r\n'
    assert len(data) > 3 * stack.settings.shard_bytes

    with WebhookReceiver() as hook:
        api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).raise_for_status()
        _drop("quotedcsv", "inbox/breast-cancer-classifier/big/quoted.csv", data)
        [event] = hook.wait_for(1, timeout=180)
        time.sleep(1)
        assert len(hook.events) == 1, "one delivery of the one terminal event"

    job_id = event["data"]["jobId"]
    assert event["eventType"] == "AIaaS.Job.PartiallySucceeded"
    assert event["data"]["counts"] == {"records": count + 1, "succeeded": len(expected), "failed": len(bad)}
    assert api.get(f"/v1/jobs/{job_id}").json()["shards"]["count"] > 3
    results = all_results(api, job_id, limit=500)
    assert [(r["recordIndex"], r["id"]) for r in results] == list(expected.items())
    errors = [
        json.loads(entry)
        for entry in get_platform().blobs.read_bytes("tenant-quotedcsv", f"outbox/{job_id}/errors.jsonl").splitlines()
    ]
    assert [(e["recordIndex"], e["line"], e["field"]) for e in errors] == [(i, *where) for i, where in bad.items()]
    assert "float32" in errors[0]["message"] and "never closed" in errors[-1]["message"]
    # The API pages the same failed records, with the same line, id, field, code and reason, in record order.
    assert [without_region(e) for e in all_results(api, job_id, limit=2, kind="errors")] == errors
    first = api.get(f"/v1/jobs/{job_id}/errors", params={"limit": 1}).json()
    results_token = api.get(f"/v1/jobs/{job_id}/results", params={"limit": 1}).json()["continuationToken"]
    wrong_list = api.get(f"/v1/jobs/{job_id}/errors", params={"continuationToken": results_token})
    assert wrong_list.status_code == 400, "a results token does not page the errors"
    assert wrong_list.json()["error"]["code"] == "InvalidContinuationToken"
    assert [without_region(e) for e in first["items"]] == errors[:1] and first["status"] == "partially_succeeded"


def test_malformed_ids_tokens_and_oversized_requests_are_4xx_on_the_real_stores(
    stack: LocalHost, create_tenant: Callable[[str], httpx.Client]
) -> None:
    """Through the Cosmos stand-in, which (like Cosmos) refuses overlong ids and requests: never a 5xx."""
    api = create_tenant("badids")
    for path in (
        "/v1/jobs/" + "a" * 16_000,
        "/v1/jobs/" + "a" * 16_000 + "/results",
        "/v1/subscriptions/" + "b" * 2000,
    ):
        answer = api.get(path)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "NotFound", answer.text[:200]
    assert api.delete("/v1/subscriptions/" + "c" * 5000).status_code == 404
    answer = api.get("/v1/models/" + "m" * 16_000)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "UnknownModel"
    for token in ("garbage", "e30", "eyJjIjoiZ2FyYmFnZSJ9"):  # ..., {}, {"c": "garbage"}
        answer = api.get("/v1/jobs", params={"continuationToken": token})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "InvalidContinuationToken"
    assert api.get("/v1/jobs", headers={"X-Padding": "p" * 12_000}).status_code == 200  # big, and no one's business
    assert api.get("/v1/jobs", headers={"Authorization": "Bearer " + "k" * 12_000}).status_code == 401
    assert api.get("/v1/models", params={"task": "t" * 12_000}).status_code == 400
    with httpx.Client(base_url=stack.api_url, timeout=30) as raw:  # past the server's own header limit
        assert 400 <= raw.get("/v1/jobs", headers={"X-Padding": "p" * 70_000}).status_code < 500
