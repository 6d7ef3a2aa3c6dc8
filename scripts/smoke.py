"""Smoke test of a deployed stamp's public contract: health, one upload, its job to the end (stdlib only)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

logger = logging.getLogger("smoke")
TERMINAL = {"succeeded", "partially_succeeded", "failed", "rejected", "cancelled"}


def _call(method: str, url: str, key: str | None, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if body is not None and not isinstance(body, bytes):
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def smoke(base_url: str, key: str, model: str, timeout_s: float) -> int:
    """0 when the stamp answers health, takes an upload and ends its job as succeeded; 1 otherwise."""
    base = base_url.rstrip("/")
    health = _call("GET", f"{base}/api/health", None)
    logger.info("health: %s", health)
    upload = _call("POST", f"{base}/api/v1/uploads", key, {"model": model, "filename": "smoke.txt"})
    blob_path = upload["blobPath"]
    # The SAS URL is the whole credential for this one blob: no bearer token goes to storage.
    _call("PUT", upload["uploadUrl"], None, b"smoke test\n", {"x-ms-blob-type": "BlockBlob"})
    logger.info("uploaded %s", blob_path)
    deadline = time.monotonic() + timeout_s
    job_id: str | None = None
    while time.monotonic() < deadline:
        if job_id is None:
            for item in _call("GET", f"{base}/api/v1/jobs", key).get("items", []):
                if blob_path in json.dumps(item):
                    job_id = item["jobId"]
        if job_id is not None:
            job = _call("GET", f"{base}/api/v1/jobs/{job_id}", key)
            if job["status"] in TERMINAL:
                logger.info("job %s ended %s: %s", job_id, job["status"], job.get("counts"))
                return 0 if job["status"] == "succeeded" else 1
        time.sleep(5)
    logger.error("no job for %s ended within %.0f s (job id %s)", blob_path, timeout_s, job_id)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_url", help="https://<function app host>")
    parser.add_argument("--model", default="text-embedding")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    key = os.environ.get("AIAAS_SMOKE_KEY", "")
    if not key:
        logger.error("AIAAS_SMOKE_KEY (a Submitter key of the smoke tenant) is not set")
        return 2
    try:
        return smoke(args.base_url, key, args.model, args.timeout)
    except (urllib.error.URLError, KeyError, ValueError) as err:
        logger.error("smoke test failed: %s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
