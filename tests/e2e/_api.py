"""What the e2e tests do as a tenant does: upload a file through its SAS URL, read every result across pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob import BlobClient

SAMPLES = Path(__file__).resolve().parents[2] / "build/samples"


def upload(api: httpx.Client, model: str, filename: str, content: bytes, parameters: Any = None) -> str:
    """Asks for an upload URL, sends the file through it (as a tenant would) and returns the blob's path."""
    request: dict[str, Any] = {"model": model, "filename": filename}
    if parameters:
        request["parameters"] = parameters
    answer = api.post("/v1/uploads", json=request)
    assert answer.status_code == 201, answer.text
    BlobClient.from_blob_url(answer.json()["uploadUrl"]).upload_blob(content)
    return str(answer.json()["blobPath"])


def all_results(api: httpx.Client, job_id: str, limit: int = 1000, *, kind: str = "results") -> list[dict[str, Any]]:
    """Every result (or, with kind="errors", every failed record) of a job, following continuation tokens."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"continuationToken": token} if token else {})}
        body = api.get(f"/v1/jobs/{job_id}/{kind}", params=params).raise_for_status().json()
        items += body["items"]
        token = body["continuationToken"]
        if not token:
            return items


def without_region(entry: dict[str, Any]) -> dict[str, Any]:
    """An API entry as the outbox file has it: the API adds the producing stamp's region, the file does not."""
    return {key: value for key, value in entry.items() if key != "region"}


def breast_cancer_jsonl(prefix: str, count: int, broken: dict[int, bytes] | None = None) -> bytes:
    """`count` breast-cancer records (the sample's rows over and over, ids `<prefix>-<i>`, no `expected`), with the
    lines of `broken` in place of theirs."""
    rows = [json.loads(line) for line in (SAMPLES / "breast-cancer.jsonl").read_bytes().splitlines()]
    lines = []
    for i in range(count):
        if broken and i in broken:
            lines.append(broken[i])
            continue
        row = {k: v for k, v in rows[i % len(rows)].items() if k != "expected"}
        row["id"] = f"{prefix}-{i}"
        lines.append(json.dumps(row).encode())
    return b"\n".join(lines) + b"\n"
