"""One trace per job across processes: `aiaas up` and its workers export over OTLP/HTTP to a local receiver."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from shared.localhost.emulators import free_port
from tests.e2e._api import upload

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer-classifier"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    pid: int


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP (protobuf) collector on a loopback port: keeps every span and metric data point it is sent."""

    port: int = field(default_factory=free_port)
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[tuple[str, dict[str, Any], Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver.take_traces(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver.take_metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                name=span.name,
                                kind=span.kind,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                pid=int(resource.get("process.pid") or 0),
                            )
                        )

    def take_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        with self.lock:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            attributes = {a.key: _value(a.value) for a in point.attributes}
                            self.points.append((metric.name, attributes, point))

    def spans_of_job(self, job_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.attributes.get("aiaas.job.id") == job_id]

    def latest(self, name: str, tenant_id: str) -> Any:
        """The newest data point of a metric for the tenant (cumulative: the last one holds the total)."""
        with self.lock:
            found = [
                p for n, attributes, p in self.points if n == name and attributes.get("aiaas.tenant.id") == tenant_id
            ]
        return found[-1] if found else None


@dataclass
class Platform:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    api_url: str
    data_dir: Path


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    started = OtlpReceiver().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def traced_platform(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Platform]:
    """`aiaas up` of its own (two workers, the small tabular model only, 32 KB shards) exporting to `receiver`."""
    tmp_path = tmp_path_factory.mktemp("traced")
    models = tmp_path / "models"
    shutil.copytree(REPO / "build/models" / MODEL, models / MODEL)
    data_dir = tmp_path / "data"
    api_port = free_port()
    env = {
        **{n: v for n, v in os.environ.items() if not n.startswith(("AIAAS_", "OTEL_", "APPLICATIONINSIGHTS_"))},
        "AIAAS_ENVIRONMENT": "development",
        "AIAAS_API_PORT": str(api_port),
        "AIAAS_AZURITE_BLOB_PORT": str(free_port()),
        "AIAAS_AZURITE_QUEUE_PORT": str(free_port()),
        "AIAAS_AZURITE_TABLE_PORT": str(free_port()),
        "AIAAS_COSMOS_PORT": str(free_port()),
        "AIAAS_DATA_DIR": str(data_dir),
        "AIAAS_MODELS_DIR": str(models),
        "AIAAS_WORKERS": "2",
        "AIAAS_SHARD_BYTES": str(32 * 1024),
        "AIAAS_OTEL_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        # Export soon after the work (the SDK's defaults: spans every 5 s, metrics every 60 s).
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        process = subprocess.Popen(
            [str(REPO / ".venv/bin/aiaas"), "up"], env=env, stdout=out_file, stderr=err_file, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            if b"aiaas local platform up" in out.read_bytes():
                break
            time.sleep(0.2)
        assert process.poll() is None, err.read_text()
        yield Platform(process, env, f"http://127.0.0.1:{api_port}/api", data_dir)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tenant(platform: Platform, tenant_id: str) -> httpx.Client:
    done = subprocess.run(
        [str(REPO / ".venv/bin/aiaas"), "tenants", "create", tenant_id, "--json"],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = json.loads(done.stdout)["apiKey"]
    return httpx.Client(base_url=platform.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_one_trace_joins_admission_every_shard_run_in_the_workers_and_the_event_publish(
    traced_platform: Platform, receiver: OtlpReceiver
) -> None:
    api = _tenant(traced_platform, "tracer")
    data = (REPO / "build/samples/breast-cancer.jsonl").read_bytes()
    blob_path = upload(api, MODEL, "rows.jsonl", data)

    def finished_job() -> dict[str, Any] | None:
        jobs = api.get("/v1/jobs").raise_for_status().json()["items"]
        mine = [job for job in jobs if job["input"]["blobPath"] == blob_path]
        return mine[0] if mine and mine[0]["status"] not in ("queued", "running") else None

    job = _wait_for("the job to end", finished_job)
    assert job["status"] == "succeeded" and job["shards"]["count"] >= 2
    shard_count, job_id = job["shards"]["count"], job["jobId"]

    def whole_trace() -> list[ReceivedSpan] | None:
        spans = receiver.spans_of_job(job_id)
        runs = {s.attributes.get("aiaas.shard.index") for s in spans if s.name == "process shards"}
        published = any(s.name == "publish events" for s in spans)
        return spans if published and runs >= set(range(shard_count)) else None

    spans = _wait_for("every span of the job", whole_trace)

    [root] = [s for s in spans if s.name == "admit upload"]
    assert root.parent_span_id == "" and root.pid == traced_platform.process.pid  # the host's watcher admits
    assert {s.trace_id for s in spans} == {root.trace_id}  # one trace, across every process
    runs = [s for s in spans if s.name == "process shards" and s.attributes["aiaas.shard.kind"] == "shard"]
    assert {s.attributes["aiaas.shard.index"] for s in runs} == set(range(shard_count))
    consumer, producer = SpanProto.SpanKind.SPAN_KIND_CONSUMER, SpanProto.SpanKind.SPAN_KIND_PRODUCER
    for run in runs:  # each a child of the admission, run by a worker process, not the host
        assert run.kind == consumer and run.parent_span_id == root.span_id
        assert run.pid not in (0, traced_platform.process.pid)
        assert run.attributes["messaging.destination.name"] == "shards"
        assert run.attributes["messaging.system"] == "azure_storage_queue"
    assert any(s.name == "publish shards" and s.kind == producer for s in spans)
    [publish] = [s for s in spans if s.name == "publish events"]
    assert publish.kind == producer and publish.attributes["messaging.system"] == "eventgrid"
    assert publish.pid != traced_platform.process.pid  # the last shard's worker finalised the job
    for span in [root, *runs, publish]:
        assert span.attributes["aiaas.tenant.id"] == "tracer"
        assert span.attributes["aiaas.job.id"] == job_id
        assert span.attributes["aiaas.model.name"] == MODEL

    records = _wait_for("the records metric", lambda: receiver.latest("aiaas.records", "tracer"))
    assert records.as_int == job["counts"]["records"]
    assert _wait_for("the queue age metric", lambda: receiver.latest("aiaas.queue.age", "tracer")).count >= 1


def test_readiness_is_200_on_a_running_platform_and_503_naming_cosmos_while_it_does_not_answer(
    traced_platform: Platform,
) -> None:
    ready = httpx.get(f"{traced_platform.api_url}/health/ready", timeout=30)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {n: {"status": "ok"} for n in ("blob", "cosmos", "queue")}}

    # Frozen, not killed: a dead Cosmos stand-in stops the whole local platform (its data was in memory).
    cosmos_pid = int((traced_platform.data_dir / "cosmos/cosmos.pid").read_text())
    os.kill(cosmos_pid, signal.SIGSTOP)
    try:
        answer = httpx.get(f"{traced_platform.api_url}/health/ready", timeout=30)
    finally:
        os.kill(cosmos_pid, signal.SIGCONT)

    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable" and body["checks"]["cosmos"]["status"] == "timeout"
    assert body["checks"]["blob"] == body["checks"]["queue"] == {"status": "ok"}
    assert "127.0.0.1" not in answer.text and "localhost" not in answer.text
