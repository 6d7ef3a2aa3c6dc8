"""`make demo`: a throwaway local stack, tenant `demo`, sample uploads, their events and results, a summary."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob import BlobClient

from shared.config import Settings
from shared.localhost.emulators import free_port
from shared.localhost.logicapps_callback import LogicAppsCallback
from shared.localhost.webhook_receiver import WebhookReceiver

logger = logging.getLogger(__name__)
SAMPLES = Path("build/samples")
TENANT = "demo"


ZERO_SHOT_LABELS = ["sports", "technology", "finance", "health", "food"]


def _sample_uploads() -> list[tuple[str, str, bytes, dict[str, Any] | None]]:
    """(model, filename, content, job parameters): a job per built-in model, one file with broken records, and
    one for a model that does not exist."""
    rows = (SAMPLES / "breast-cancer.jsonl").read_bytes()
    lines = rows.splitlines()
    broken = [*lines[:20], b'{"id": "broken-1", "mean radius": "not a number"}', b"{not json"]
    # The held-out rows with every feature x1.5 (a unit change upstream): the model's drift check flags it.
    scaled = [
        json.dumps({k: v * 1.5 if isinstance(v, float) else v for k, v in json.loads(line).items()}).encode()
        for line in lines
    ]
    return [
        ("breast-cancer-classifier", "breast-cancer.jsonl", rows, None),
        ("breast-cancer-classifier", "scaled-x1.5.jsonl", b"\n".join(scaled) + b"\n", None),
        ("breast-cancer-classifier", "breast-cancer.csv", (SAMPLES / "breast-cancer.csv").read_bytes(), None),
        ("breast-cancer-classifier@1", "with-broken-rows.jsonl", b"\n".join(broken) + b"\n", None),
        ("transaction-anomaly-detector", "transactions.jsonl", (SAMPLES / "transactions.jsonl").read_bytes(), None),
        ("digits-classifier", "digits.zip", (SAMPLES / "digits.zip").read_bytes(), None),
        ("digits-classifier", "digit-7.png", (SAMPLES / "digit-7.png").read_bytes(), None),
        ("text-embedding", "texts.txt", (SAMPLES / "texts.txt").read_bytes(), None),
        (
            "zero-shot-text-classifier",
            "zero-shot.jsonl",
            (SAMPLES / "zero-shot.jsonl").read_bytes(),
            {"labels": ZERO_SHOT_LABELS},
        ),
        ("no-such-model", "anything.jsonl", lines[0] + b"\n", None),
    ]


def run_demo(*, workers: int = 2) -> int:
    from shared.localhost.host import LocalHost
    from shared.services.tenants import create_tenant

    if not (SAMPLES / "breast-cancer.jsonl").exists():
        print(f"missing {SAMPLES}: run `make models` first")
        return 1
    data_dir = Path(tempfile.mkdtemp(prefix="aiaas-demo-"))
    ports = {name: free_port() for name in ("api", "blob", "queue", "table", "cosmos")}
    settings = Settings(
        api_port=ports["api"],
        azurite_blob_port=ports["blob"],
        azurite_queue_port=ports["queue"],
        azurite_table_port=ports["table"],
        cosmos_port=ports["cosmos"],
        data_dir=data_dir,
        workers=workers,
        allow_loopback_endpoints=True,  # the demo's webhook receiver listens on loopback
    )
    started = time.perf_counter()
    try:
        with LocalHost(settings) as host, WebhookReceiver() as webhook, LogicAppsCallback() as logic_app:
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
            # As the connector's "When a job finishes" trigger subscribes: a callback that answers 202 to
            # everything and echoes no handshake; the platform's relay delivers to it.
            answer = api.post("/v1/subscriptions", json={"callbackUrl": logic_app.url})
            if answer.status_code != 201:
                raise RuntimeError(f"subscribing the Logic Apps callback failed: {answer.status_code} {answer.text}")
            print(
                f"Logic-Apps-style callback subscribed ({answer.json()['subscriptionId'][:8]}..., no handshake; "
                "delivered through the relay)"
            )
            uploads = _sample_uploads()
            upload_started = time.perf_counter()
            for model, filename, content, parameters in uploads:
                request: dict[str, Any] = {"model": model, "filename": filename}
                if parameters:
                    request["parameters"] = parameters
                answer = api.post("/v1/uploads", json=request)
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
            webhook.wait_until(lambda: len(_job_events(webhook.events)) >= len(uploads), timeout=120)
            elapsed = time.perf_counter() - upload_started
            time.sleep(1.0)  # a drifted job's AIaaS.Model.DriftDetected follows its own event
            events = list(webhook.events)
            jobs = _job_events(events)
            print(f"\n{len(jobs)} job events delivered to the webhook in {elapsed:.2f}s:")
            summary = _summarise(api, jobs)
            drift = _drift_summary(events)
            relayed = _logic_app_summary(logic_app, jobs, timeout=max(10.0, 60 - elapsed))
            decided = _rollout_demo(api, webhook)
            time.sleep(0.2)
            return 0 if len(jobs) == len(uploads) and summary and drift and relayed and decided else 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _rollout_demo(api: httpx.Client, webhook: WebhookReceiver) -> bool:
    """A tenant's own model in two versions (the breast-cancer package twice), v2 as a 50% canary with gates; jobs
    run until the platform decides by itself, and the decision is shown with the figures that made it."""
    import base64
    import uuid

    from shared.bootstrap import get_platform

    package, name = Path("build/models/breast-cancer-classifier/1"), "demo-cancer"
    for version in ("1", "2"):
        card = json.loads((package / "card.json").read_text())
        card.update(name=name, version=version, description=f"{name} {version}")
        files = {f["file"]: base64.b64encode((package / f["file"]).read_bytes()).decode() for f in card["files"]}
        body = {"card": card, "artifactBase64": base64.b64encode((package / "model.onnx").read_bytes()).decode()}
        answer = api.post("/v1/models", json={**body, "files": files})
        if answer.status_code != 201:
            raise RuntimeError(f"registering {name} {version} failed: {answer.status_code} {answer.text}")
    canary = {
        "version": "2",
        "percent": 50,
        "gates": {"minAgreement": 0.95, "maxErrorRate": 0.05},
        "evidence": {"jobs": 2, "records": 20},
    }
    answer = api.put(f"/v1/models/{name}/aliases/production", json={"canary": canary})
    if answer.status_code != 200:
        raise RuntimeError(f"starting the rollout failed: {answer.status_code} {answer.text}")
    print(
        f"\nrollout: {name} v2 as a 50% canary of v1 (gates: agreement >= 0.95, error rate <= 0.05; "
        "evidence: 2 jobs, 20 records)"
    )
    kinds = {"AIaaS.Model.Promoted", "AIaaS.Model.RolledBack"}
    rows = b"".join((SAMPLES / "breast-cancer.jsonl").read_bytes().splitlines(keepends=True)[:10])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        path = f"data/{uuid.uuid4().hex}.jsonl"
        get_platform().blobs.write_bytes(f"tenant-{TENANT}", path, rows)
        job_id = api.post("/v1/jobs", json={"model": name, "blobPath": path}).json()["jobId"]
        while api.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running"):
            time.sleep(0.1)
        time.sleep(0.3)  # the decision is written right after the job's end
        view = api.get(f"/v1/models/{name}/aliases").json()
        if not view["rollouts"]:
            decision = view["history"][-1]
            figures = decision["figures"]["canary"]
            print(
                f"  decided by the platform: {decision['rollout']} v{decision.get('canaryVersion', '2')} "
                f"after {figures['jobs']} canary jobs, {figures['records']} records, agreement "
                f"{figures['agreement']}, error rate {figures['errorRate']}; production is now "
                f"v{view['aliases']['production']}"
            )
            webhook.wait_until(lambda: any(e["eventType"] in kinds for e in webhook.events), timeout=10)
            sent = [e["eventType"] for e in webhook.events if e["eventType"] in kinds]
            print(f"  event at the webhook: {', '.join(sent) or 'none yet'}")
            return True
    print("  no decision within a minute")
    return False


def _logic_app_summary(logic_app: LogicAppsCallback, events: list[dict[str, Any]], *, timeout: float) -> bool:
    """What the Logic-Apps-style callback got: every job event the webhook got, each as one JSON object (a callback
    subscribed without eventTypes, as the "When a job finishes" trigger is, gets the job outcomes, no model events)."""
    received = logic_app.wait_for(len(events), timeout=timeout)
    objects = [e for e in received if isinstance(e, dict)]
    same = {e["id"] for e in objects} == {e["id"] for e in events}
    print(
        f"\nLogic-Apps-style callback (answers 202 to everything, never echoes a validation code): "
        f"{len(objects)} of {len(events)} events received through the relay, one JSON object a request"
        f"{'' if same else ' (MISSING some)'}:"
    )
    for event in objects:
        status = event["data"].get("status") or event["data"].get("drift", {}).get("status")
        print(f"  {event['eventType']:<30} job {event['data']['jobId'][:12]}... {status}")
    return same and len(objects) == len(received)


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
            drift = api.get(f"/v1/jobs/{data['jobId']}").raise_for_status().json().get("drift")
            if drift:
                print(
                    f"      drift: {drift['status']} ({drift.get('driftedColumns')} of {drift.get('columns')} columns)"
                )
    return ok


def _job_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if str(e.get("eventType", "")).startswith("AIaaS.Job.")]


def _drift_summary(events: list[dict[str, Any]]) -> bool:
    """The AIaaS.Model.DriftDetected events: one per drifted job, with its figures; the x1.5 file must be one."""
    detected = [e for e in events if e.get("eventType") == "AIaaS.Model.DriftDetected"]
    print(f"\n{len(detected)} drift event(s):")
    for event in detected:
        drift = event["data"]["drift"]
        worst = sorted((f for f in drift["features"] if f["drifted"]), key=lambda f: f["value"])[:3]
        figures = ", ".join(f"{f['name']} {f['metric']}={f['value']:.3g}" for f in worst)
        print(
            f"  {event['data']['model']['name']:<28} job {event['data']['jobId'][:12]}... "
            f"{drift['share']:.0%} of columns drifted{': ' + figures if figures else ''}"
        )
    files = {e["data"]["jobId"]: e["data"]["input"]["blobPath"].rsplit("/", 1)[-1] for e in _job_events(events)}
    drifted = {files.get(e["data"]["jobId"]) for e in detected}
    return "scaled-x1.5.jsonl" in drifted and "breast-cancer.jsonl" not in drifted


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
    print(f"      results API: {len(items)} results; {_describe(items)}")
    return bool(len(items) == data["counts"]["succeeded"])


def _expected() -> dict[str, str]:
    """Known answers of the samples, by record id: labelled rows, and digits named digit-<i>-<label>.png."""
    known = {}
    for name in ("breast-cancer.jsonl", "transactions.jsonl"):
        for line in (SAMPLES / name).read_text().splitlines():
            row = json.loads(line)
            known[row["id"]] = str(row["expected"])
    with zipfile.ZipFile(SAMPLES / "digits.zip") as archive:
        for entry in archive.namelist():
            known[entry] = entry.rsplit("-", 1)[-1].split(".")[0]
    known["digit-7.png"] = "7"
    return known


def _describe(items: list[dict[str, Any]]) -> str:
    if not items:
        return "none"
    first = items[0]["output"]
    expected = _expected()
    if "embedding" in first:
        norm = sum(v * v for v in first["embedding"]) ** 0.5
        return f"{len(first['embedding'])}-dim embeddings, first norm {norm:.3f}"
    if "isAnomaly" in first:
        flagged = [i for i in items if i["output"]["isAnomaly"]]
        planted = {i["id"] for i in items if expected.get(i["id"], "normal") != "normal"}
        right = sum(i["id"] in planted for i in flagged)
        truth = len(planted)
        return f"{len(flagged)} flagged as anomalies, {right} of them among the {truth} planted"
    scored = [i for i in items if i["id"] in expected]
    if scored:
        right = sum(i["output"]["label"] == expected[i["id"]] for i in scored)
        return f"accuracy on labelled records {right}/{len(scored)} = {right / len(scored):.3f}"
    labels = [i["output"]["label"] for i in items[:4]]
    return f"first labels: {', '.join(labels)}"
