"""Bad uploads on the local stack: each ends as one event whose error code says what to fix; nothing hangs."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shared.bootstrap import get_platform
from shared.localhost.webhook_receiver import WebhookReceiver

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
    blobs = get_platform().blobs
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
