"""Telemetry: one connected trace per job (admission, every shard run, the event publish), its metrics, readiness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from functions import ingest as ingest_function
from functions import worker as worker_function
from shared import telemetry
from shared.api.app import create_app
from shared.domain.jobs import PLAN, Job, JobStatus, ShardMessage
from shared.domain.tenants import container_for
from shared.localhost.functions_host import blob_created_event, servicebus_message
from shared.services.outcomes import republish_unsent_event
from shared.services.platform import Platform
from shared.services.readiness import check_ready
from shared.services.sweeper import sweep
from tests.fakes import MODEL_NAME, add_tenant, make_platform, sample_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        telemetry.use_providers(tracer_provider, MeterProvider(metric_readers=[self.metrics]))

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    monkeypatch.setenv("AIAAS_ENVIRONMENT", "development")
    recorder = Telemetry()
    try:
        yield recorder
    finally:
        telemetry.reset()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch, otel: Telemetry) -> Platform:
    """Small shards (a sample file splits), the queue traced as bootstrap wraps it, the triggers on this platform."""
    platform = make_platform(shard_bytes=4096, batch_size=50)
    add_tenant(platform, "acme")
    platform.queue = telemetry.TracedJobQueue(platform.queue, system="azure_storage_queue", destination="shards")
    monkeypatch.setattr(ingest_function, "get_platform", lambda: platform)
    monkeypatch.setattr(worker_function, "get_platform", lambda: platform)
    return platform


def upload_event(platform: Platform, name: str, data: bytes) -> Any:
    path = f"inbox/{MODEL_NAME}/{name}"
    platform.blobs.write_bytes(container_for("acme"), path, data)
    info = platform.blobs.get_info(container_for("acme"), path)
    return blob_created_event(
        account="devstoreaccount1",
        container=container_for("acme"),
        blob=path,
        etag=info.etag,
        size=info.size,
        content_type="application/x-ndjson",
        url=f"http://127.0.0.1/devstoreaccount1/{container_for('acme')}/{path}",
        sequencer=1,
    )


def run_queue_as_workers(platform: Platform) -> list[ShardMessage]:
    """Every enqueued message through the registered trigger, as bytes on the wire (the worker's body)."""
    ran = []
    while messages := platform.queue.drain():  # type: ignore[attr-defined]
        for message in messages:
            body = orjson.dumps({"messageId": message.message_id, **message.to_dict()})
            worker_function.run_shard_message(
                servicebus_message(
                    body,
                    message_id=message.message_id,
                    delivery_count=1,
                    session_id=None,
                    enqueued_time_utc=datetime.now(UTC) - timedelta(seconds=2),
                )
            )
        ran.extend(messages)
    return ran


def few_rows(count: int = 5) -> bytes:
    return b"".join(sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)[:count])


def only_job(platform: Platform) -> Job:
    jobs, _ = platform.jobs.list_jobs("acme", limit=10)
    [job] = jobs
    return job


def test_one_trace_joins_the_admission_every_shard_run_and_the_event_publish(traced: Platform, otel: Telemetry) -> None:
    data = sample_bytes("breast-cancer.jsonl")
    ingest_function.ingest_blob(upload_event(traced, "rows.jsonl", data))
    ran = run_queue_as_workers(traced)
    job = only_job(traced)

    assert job.status == JobStatus.SUCCEEDED and job.shard_count >= 2
    spans = otel.finished()
    [root] = [s for s in spans if s.name == "admit upload"]
    assert root.parent is None and root.kind == SpanKind.CONSUMER
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}  # one trace, nothing outside it
    shard_runs = [s for s in spans if s.name == "process shards" and s.attributes["aiaas.shard.kind"] == "shard"]
    assert sorted(s.attributes["aiaas.shard.index"] for s in shard_runs) == list(range(job.shard_count))
    plan_runs = [s for s in spans if s.name == "process shards" and s.attributes["aiaas.shard.kind"] == PLAN]
    assert len(plan_runs) == 1 and len(ran) == job.shard_count + 1
    for run in shard_runs + plan_runs:  # every run a child of the admission, whichever order they ran in
        assert run.kind == SpanKind.CONSUMER and run.parent is not None
        assert run.parent.span_id == root.context.span_id
        assert run.attributes["messaging.destination.name"] == "shards"
        assert run.attributes["messaging.system"] == "azure_storage_queue"
    sends = [s for s in spans if s.name == "publish shards"]
    assert sends and all(s.kind == SpanKind.PRODUCER for s in sends)
    assert sum(s.attributes["messaging.batch.message_count"] for s in sends) == len(ran)
    [publish] = [s for s in spans if s.name == "publish events"]
    assert publish.kind == SpanKind.PRODUCER and publish.attributes["messaging.system"] == "eventgrid"
    for span in [root, *shard_runs, publish]:
        assert span.attributes["aiaas.tenant.id"] == "acme"
        assert span.attributes["aiaas.job.id"] == job.job_id
        assert span.attributes["aiaas.model.name"] == MODEL_NAME
    # The finaliser ran inside the last shard's run: its publish is that run's child, in the same trace.
    assert publish.parent is not None and publish.parent.span_id in {s.context.span_id for s in shard_runs}


def test_metrics_count_records_errors_job_duration_and_queue_age_by_tenant_and_model(
    traced: Platform, otel: Telemetry
) -> None:
    rows = [json.loads(line) for line in sample_bytes("breast-cancer.jsonl").splitlines()[:30]]
    bad = [{"id": "bad-1", "features": "not numbers"}, {"id": "bad-2"}]
    data = b"".join(orjson.dumps(row) + b"\n" for row in rows + bad)
    ingest_function.ingest_blob(upload_event(traced, "mixed.jsonl", data))
    ran = run_queue_as_workers(traced)
    job = only_job(traced)
    assert job.counts.failed == 2 and job.counts.records == 32

    labels = {"aiaas.tenant.id": "acme", "aiaas.model.name": MODEL_NAME}
    [records] = otel.points("aiaas.records")
    [errors] = otel.points("aiaas.record.errors")
    assert (records.value, dict(records.attributes)) == (32, labels)
    assert (errors.value, dict(errors.attributes)) == (2, labels)
    [duration] = otel.points("aiaas.job.duration")
    assert duration.count == 1 and duration.attributes["aiaas.job.status"] == job.status.value
    ages = otel.points("aiaas.queue.age")
    assert sum(point.count for point in ages) == len(ran)  # every message run: the plan and each shard
    # Enqueued (by the queue's clock) two seconds before each run started.
    assert all(point.min >= 2 and dict(point.attributes) == labels for point in ages)


def test_the_sweepers_republish_continues_the_jobs_trace_from_the_stored_context(
    platform: Platform, otel: Telemetry
) -> None:
    with telemetry.span("admit upload") as _:
        admission = telemetry.current_traceparent()
    [root] = otel.finished()
    job = Job("acme", "a" * 32, MODEL_NAME, "1", "inbox/x/rows.jsonl", "etag", status=JobStatus.SUCCEEDED)
    job.traceparent, job.completed_at = admission, job.created_at
    job.counts.records = job.counts.succeeded = 3
    platform.jobs.create_job(job)

    republish_unsent_event(platform, platform.jobs.get_job("acme", job.job_id))  # no span is current here

    [publish] = [s for s in otel.finished() if s.name == "publish events"]
    assert publish.context.trace_id == root.context.trace_id
    assert publish.parent is not None and publish.parent.span_id == root.context.span_id


def test_a_job_submitted_through_the_api_is_traced_from_its_post(traced: Platform, otel: Telemetry) -> None:
    key = add_tenant(traced, "globex")
    traced.blobs.write_bytes(container_for("globex"), "data/rows.jsonl", few_rows())
    client = TestClient(create_app(lambda: traced), raise_server_exceptions=False)

    answer = client.post(
        "/api/v1/jobs",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL_NAME, "blobPath": "data/rows.jsonl"},
    )
    assert answer.status_code == 202, answer.text
    assert traced.jobs.get_job("globex", answer.json()["jobId"]).shard_count == 1  # small: no plan message
    run_queue_as_workers(traced)

    spans = otel.finished()
    [root] = [s for s in spans if s.name == "POST /api/v1/jobs"]
    assert root.kind == SpanKind.SERVER and root.attributes["aiaas.job.id"] == answer.json()["jobId"]
    [run] = [s for s in spans if s.name == "process shards"]
    assert run.parent is not None and run.parent.span_id == root.context.span_id
    assert any(s.name == "publish events" and s.context.trace_id == root.context.trace_id for s in spans)


def test_a_shard_the_sweeper_re_drives_runs_in_the_jobs_trace(traced: Platform, otel: Telemetry) -> None:
    ingest_function.ingest_blob(upload_event(traced, "rows.jsonl", few_rows()))
    traced.queue.drain()  # type: ignore[attr-defined]  # the shard's message is lost (a worker died with it)
    [root] = [s for s in otel.finished() if s.name == "admit upload"]

    sweep(traced, stalled_after=timedelta(seconds=-1), max_sweeps=3)
    run_queue_as_workers(traced)

    assert only_job(traced).status == JobStatus.SUCCEEDED
    [run] = [s for s in otel.finished() if s.name == "process shards"]  # one small file: one shard, re-driven
    assert run.context.trace_id == root.context.trace_id and run.parent is not None
    assert run.parent.span_id == root.context.span_id


def test_the_trace_context_travels_in_the_shard_message_and_the_job_document() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    job = Job("acme", "b" * 32, MODEL_NAME, "1", "inbox/x/rows.jsonl", "etag", traceparent=traceparent)
    job.shard_plan = [[0, 10, 0, 1], [10, 20, 5, 6]]
    stored = Job.from_doc(orjson.loads(orjson.dumps(job.to_doc())))
    assert stored.traceparent == traceparent
    for message in stored.shard_messages():
        wire = orjson.loads(orjson.dumps(message.to_dict()))
        assert ShardMessage.from_dict(wire).traceparent == traceparent
    old = {"tenantId": "acme", "jobId": "b" * 32, "shardIndex": 0, "shardCount": 1}  # sent before the field
    assert ShardMessage.from_dict(old).traceparent is None
    assert ShardMessage.from_dict({**old, "traceparent": {"not": "a string"}}).traceparent is None


# Runs the admission and a shard through the registered functions over the fakes, then lists what was imported.
COLD_START = """
import json, sys
from datetime import UTC, datetime
import orjson
import function_app
from functions import ingest, worker
from shared.localhost.functions_host import blob_created_event, servicebus_message
from tests.fakes import MODEL_NAME, add_tenant, make_platform, sample_bytes

platform = make_platform()
add_tenant(platform, "acme")
ingest.get_platform = worker.get_platform = lambda: platform
path = f"inbox/{MODEL_NAME}/rows.jsonl"
platform.blobs.write_bytes("tenant-acme", path, sample_bytes("breast-cancer.jsonl"))
info = platform.blobs.get_info("tenant-acme", path)
ingest.ingest_blob(blob_created_event(account="a", container="tenant-acme", blob=path, etag=info.etag,
                                      size=info.size, content_type=None, url="http://127.0.0.1/x", sequencer=1))
for message in platform.queue.drain():
    body = orjson.dumps(message.to_dict())
    worker.run_shard_message(servicebus_message(body, message_id=message.message_id, delivery_count=1,
                                                session_id=None, enqueued_time_utc=datetime.now(UTC)))
[job] = platform.jobs.list_jobs("acme", limit=5)[0]
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry" or m.startswith("azure.monitor"))
print(json.dumps({"status": job.status.value, "telemetry": loaded}))
"""


@pytest.mark.parametrize("exporter", ["none", "otlp"])
def test_with_telemetry_off_no_opentelemetry_module_is_imported_on_the_cold_start_path(exporter: str) -> None:
    env = {n: v for n, v in os.environ.items() if not n.startswith(("AIAAS_", "OTEL_", "APPLICATIONINSIGHTS_"))}
    env.update({"AIAAS_ENVIRONMENT": "development", "AIAAS_OTEL_EXPORTER": exporter})
    # On: export to a loopback port nobody listens on, once, quickly (the probe only checks what was imported).
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})

    done = subprocess.run(
        [sys.executable, "-c", COLD_START], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["status"] == "succeeded"
    if exporter == "none":
        assert probe["telemetry"] == []
    else:  # the same path with telemetry on does load it: the probe above can see an import
        assert "opentelemetry.sdk.trace" in probe["telemetry"]


AZURE_MONITOR_PROBE = """
import json, socket
attempts = []
connect = socket.socket.connect
def loopback_only(self, address, *args):
    if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
        attempts.append(repr(address))
        raise OSError("this test allows loopback only")
    return connect(self, address, *args)
socket.socket.connect = loopback_only

from shared import telemetry
from opentelemetry import trace
with telemetry.span("admit upload", kind="consumer", attributes={"aiaas.tenant.id": "acme", "aiaas.job.id": "j1"}):
    pass
trace.get_tracer_provider().force_flush()
print(json.dumps({"attempts": attempts}))
"""


class IngestionEndpoint:
    """Application Insights' ingestion API (POST /v2.1/track, JSON envelopes) on a loopback port."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from shared.localhost.emulators import free_port

        self.envelopes: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                if self.path == "/v2.1/track":
                    endpoint.envelopes.extend(json.loads(body))
                answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_with_an_application_insights_connection_string_spans_go_to_azure_monitor() -> None:
    ingestion = IngestionEndpoint()
    env = {n: v for n, v in os.environ.items() if not n.startswith(("AIAAS_", "OTEL_", "APPLICATIONINSIGHTS_"))}
    env.update(
        {
            "AIAAS_ENVIRONMENT": "development",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint={ingestion.url}",
            # No call past loopback: no statsbeat (Microsoft's own endpoint), no Azure VM metadata lookup.
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_functions",
        }
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", AZURE_MONITOR_PROBE],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        ingestion.close()

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["attempts"] == []
    [request] = [e for e in ingestion.envelopes if e["data"]["baseData"].get("name") == "admit upload"]
    assert request["data"]["baseData"]["properties"]["aiaas.tenant.id"] == "acme"
    assert request["tags"]["ai.cloud.role"] == "aiaas"


# Readiness


def test_readiness_reports_each_probe_and_bounds_a_hanging_one() -> None:
    release = threading.Event()

    def broken() -> None:
        raise ConnectionError("could not reach https://secret-account.documents.azure.com:443/")

    try:
        ready, checks = check_ready(
            {"blob": lambda: None, "cosmos": broken, "queue": release.wait}, timeout_seconds=0.5
        )
    finally:
        release.set()
    assert not ready
    assert checks == {
        "blob": {"status": "ok"},
        "cosmos": {"status": "failed", "error": "ConnectionError"},
        "queue": {"status": "timeout"},
    }


def test_get_health_ready_answers_200_when_every_dependency_answers_and_503_naming_the_one_that_did_not(
    platform: Platform,
) -> None:
    client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)
    platform.readiness = {"blob": lambda: None, "cosmos": lambda: None, "queue": lambda: None}

    answer = client.get("/api/health/ready")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {n: {"status": "ok"} for n in ("blob", "cosmos", "queue")}}

    def cosmos_down() -> None:
        raise ConnectionError("https://secret-account.documents.azure.com:443/ refused the connection")

    platform.readiness["cosmos"] = cosmos_down
    answer = client.get("/api/health/ready")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable" and body["checks"]["cosmos"]["status"] == "failed"
    assert body["checks"]["blob"] == body["checks"]["queue"] == {"status": "ok"}
    assert "secret-account" not in answer.text  # no host names, no error text


def test_get_health_ready_is_503_when_the_platform_cannot_even_be_built() -> None:
    def no_platform() -> Platform:
        raise ConnectionError("https://secret-account.documents.azure.com:443/ refused the connection")

    answer = TestClient(create_app(no_platform), raise_server_exceptions=False).get("/api/health/ready")
    assert answer.status_code == 503 and "secret-account" not in answer.text
    assert answer.json()["checks"]["platform"]["status"] == "failed"
