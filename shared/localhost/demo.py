"""`make demo`: a throwaway local stack, tenant `demo`, sample uploads, their events and results, a summary."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob import BlobClient

from shared.config import Settings
from shared.localhost.emulators import free_port
from shared.localhost.webhook_receiver import WebhookReceiver

logger = logging.getLogger(__name__)
SAMPLES = Path("build/samples")
TENANT = "demo"


def _sample_uploads() -> list[tuple[str, str, bytes]]:
    """(model, filename, content): good files, one with broken records, one for a model that does not exist."""
    rows = (SAMPLES / "breast-cancer.jsonl").read_bytes()
    lines = rows.splitlines()
    broken = [*lines[:20], b'{"id": "broken-1", "mean radius": "not a number"}', b"{not json"]
    return [
        ("breast-cancer-classifier", "breast-cancer.jsonl", rows),
        ("breast-cancer-classifier", "breast-cancer.csv", (SAMPLES / "breast-cancer.csv").read_bytes()),
        ("breast-cancer-classifier@1", "with-broken-rows.jsonl", b"\n".join(broken) + b"\n"),
        ("no-such-model", "anything.jsonl", lines[0] + b"\n"),
    ]


def run_demo(*, workers: int = 2) -> int:
    from shared.localhost.host import LocalHost
    from shared.services.tenants import create_tenant

    if not (SAMPLES / "breast-cancer.jsonl").exists():
        print(f"missing {SAMPLES}: run `make models` first")
        return 1
    data_dir = Path(tempfile.mkdtemp(prefix="aiaas-demo-"))
    ports = {name: free_port() for name in ("api", "blob", "queue", "table", "cosmos")}
    os.environ.update({"AIAAS_WEBHOOK_FIRST_RETRY_SECONDS": "0.5"})
    settings = Settings(
        api_port=ports["api"],
        azurite_blob_port=ports["blob"],
        azurite_queue_port=ports["queue"],
        azurite_table_port=ports["table"],
        cosmos_port=ports["cosmos"],
        data_dir=data_dir,
        workers=workers,
    )
    started = time.perf_counter()
    try:
        with LocalHost(settings) as host, WebhookReceiver() as webhook:
            print(
                f"local stack up in {time.perf_counter() - started:.1f}s: API {host.api_url}, "
                f"{len(host.worker_processes)} workers"
            )
            from shared.bootstrap import get_platform

            api_key = create_tenant(get_platform(), TENANT)
            api = httpx.Client(base_url=host.api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
            answer = api.post("/v1/subscriptions", json={"endpointUrl": webhook.url})
            if answer.status_code != 201:
                raise RuntimeError(f"subscribing the webhook failed: {answer.status_code} {answer.text}")
            sub = answer.json()
            print(f"tenant '{TENANT}' created; webhook subscribed ({sub['subscriptionId'][:8]}..., handshake passed)")
            uploads = _sample_uploads()
            upload_started = time.perf_counter()
            for model, filename, content in uploads:
                answer = api.post("/v1/uploads", json={"model": model, "filename": filename})
                if answer.status_code != 201:
                    # An unknown model is refused at the API; drop it in the inbox directly to show the event.
                    path = f"inbox/{model}/demo/{filename}"
                    get_platform().blobs.write_bytes(f"tenant-{TENANT}", path, content)
                    print(
                        f"  {model:<28} {filename:<24} API said {answer.status_code}: "
                        f"{answer.json()['error']['message']}; dropped into the inbox instead"
                    )
                    continue
                upload = answer.json()
                BlobClient.from_blob_url(upload["uploadUrl"]).upload_blob(content)
                print(f"  {model:<28} {filename:<24} uploaded through its SAS URL ({len(content):,} bytes)")
            events = webhook.wait_for(len(uploads), timeout=120)
            elapsed = time.perf_counter() - upload_started
            print(f"\n{len(events)} events delivered to the webhook in {elapsed:.2f}s:")
            summary = _summarise(api, events)
            time.sleep(0.2)
            return 0 if len(events) == len(uploads) and summary else 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _summarise(api: httpx.Client, events: list[dict[str, Any]]) -> bool:
    ok = True
    for event in events:
        data = event["data"]
        counts = data["counts"]
        line = (
            f"  {event['eventType']:<30} {data['input']['blobPath'].split('/')[-1]:<24} "
            f"records={counts['records']:<4} ok={counts['succeeded']:<4} failed={counts['failed']:<3}"
        )
        if "error" in data:
            line += f" error={data['error']['code']}: {data['error']['message']}"
        print(line)
        if data["status"] in {"succeeded", "partially_succeeded"}:
            ok &= _check_results(api, data)
    return ok


def _check_results(api: httpx.Client, data: dict[str, Any]) -> bool:
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = api.get(f"/v1/jobs/{data['jobId']}/results", params={"continuationToken": token} if token else {})
        body = page.raise_for_status().json()
        items += body["items"]
        token = body["continuationToken"]
        if not token:
            break
    expected = {}
    for line in (SAMPLES / "breast-cancer.jsonl").read_text().splitlines():
        row = json.loads(line)
        expected[row["id"]] = row["expected"]
    scored = [item for item in items if item["id"] in expected]
    if scored:
        right = sum(item["output"]["label"] == expected[item["id"]] for item in scored)
        print(
            f"      results API: {len(items)} results; accuracy on labelled rows {right}/{len(scored)} "
            f"= {right / len(scored):.3f}; first: {items[0]['id']} -> {items[0]['output']['label']}"
        )
    else:
        print(f"      results API: {len(items)} results; first: {items[0]['output']}")
    return bool(len(items) == data["counts"]["succeeded"])
