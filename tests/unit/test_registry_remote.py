"""The remote runtime (Open Inference Protocol / KServe V2) against a tiny V2 server on 127.0.0.1: requests,
output mapping, retries on 5xx/429/timeouts, 4xx as record failures, credentials kept out of cards and views."""

from __future__ import annotations

import json
import logging
import math
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.secrets import LocalSecretStore
from shared.domain.errors import InvalidInput, InvalidRecord
from shared.domain.models import ModelCard, ModelRef
from shared.inference.registry import BlobModelRegistry
from shared.inference.remote import RemoteEndpointUnavailable, RemoteOipPredictor
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from tests.fakes import InMemoryBlobStore, fakes_of, upload


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client that timed out on a stalled reply has gone: expected here


class V2Server:
    """A V2 `infer` endpoint for models `scorer` (tabular, 3 features) and `shout` (text); scripted failures first."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: list[tuple[int, dict[str, str]] | float] = []  # status+headers, or seconds to stall
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if outer.failures:
                    failure = outer.failures.pop(0)
                    if isinstance(failure, float):
                        time.sleep(failure)
                    else:
                        status, headers = failure
                        self._reply(status, {"error": f"scripted {status}"}, headers)
                        return
                if self.path == "/v2/models/scorer/infer":
                    [tensor] = body["inputs"]
                    if tensor["datatype"] != "FP32" or tensor["shape"][1] != 3:
                        self._reply(400, {"error": "input must be FP32 [n, 3]"})
                        return
                    rows = [tensor["data"][i * 3 : i * 3 + 3] for i in range(tensor["shape"][0])]
                    if any(value < 0 for row in rows for value in row):
                        self._reply(400, {"error": "negative feature"})
                        return
                    yes = [1 / (1 + math.exp(-(sum(row) - 3))) for row in rows]
                    data = [p for y in yes for p in (1 - y, y)]
                    shape = [len(rows), 2]
                    self._reply(
                        200, {"outputs": [{"name": "probabilities", "shape": shape, "datatype": "FP32", "data": data}]}
                    )
                elif self.path == "/v2/models/shout/infer":
                    texts = body["inputs"][0]["data"]
                    self._reply(
                        200,
                        {
                            "outputs": [
                                {
                                    "name": "upper",
                                    "shape": [len(texts)],
                                    "datatype": "BYTES",
                                    "data": [t.upper() for t in texts],
                                },
                                {
                                    "name": "length",
                                    "shape": [len(texts), 1],
                                    "datatype": "INT64",
                                    "data": [[len(t)] for t in texts],
                                },
                            ]
                        },
                    )
                else:
                    self._reply(404, {"error": "no such model"})

            def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> V2Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The development setting that lets the egress policy reach the V2 server on 127.0.0.1."""
    from shared.config import get_settings

    monkeypatch.setenv("AIAAS_ENVIRONMENT", "development")
    monkeypatch.setenv("AIAAS_ALLOW_LOOPBACK_ENDPOINTS", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def v2(loopback_allowed: None) -> Iterator[V2Server]:
    with V2Server() as server:
        yield server


def scorer_card(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "remote-scorer",
        "version": "1",
        "task": "tabular-classification",
        "handler": "tabular-classifier",
        "runtime": "remote-oip",
        "endpoint": f"{url}/v2/models/scorer",
        "inputTypes": [".jsonl", ".csv"],
        "features": ["a", "b", "c"],
        "labels": ["no", "yes"],
        "oip": {"inputName": "input", "timeoutSeconds": 0.5, "maxRetries": 2},
        **extra,
    }


def predictor_for(card: dict[str, Any]) -> RemoteOipPredictor:
    return RemoteOipPredictor(ModelCard(card), backoff_seconds=0.01)


def test_tabular_records_go_as_one_fp32_tensor_and_come_back_as_labels(v2: V2Server) -> None:
    predictor = predictor_for(scorer_card(v2.url))
    prepared = [predictor.prepare({"a": 0, "b": "0.5", "c": 0}), predictor.prepare({"a": 3, "b": 2, "c": 1})]
    low, high = predictor.predict(prepared)
    assert low["label"] == "no" and high["label"] == "yes"
    assert set(high["probabilities"]) == {"no", "yes"} and sum(high["probabilities"].values()) == pytest.approx(1)
    [sent] = v2.requests
    assert sent["path"] == "/v2/models/scorer/infer"
    assert sent["body"]["inputs"] == [
        {"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [0, 0.5, 0, 3, 2, 1]}
    ]
    with pytest.raises(InvalidRecord, match="'b' is missing"):
        predictor.prepare({"a": 1, "c": 1})
    with pytest.raises(InvalidRecord):
        predictor.prepare({"a": 1, "b": True, "c": 1})
    with pytest.raises(InvalidRecord):
        predictor.prepare([1, 2, 3])


def test_text_records_go_as_bytes_and_every_output_comes_back_per_record(v2: V2Server) -> None:
    card = {
        "name": "shout",
        "version": "1",
        "handler": "text",
        "runtime": "remote-oip",
        "endpoint": f"{v2.url}/v2/models/shout/",
        "inputTypes": [".txt", ".jsonl"],
    }
    predictor = predictor_for(card)
    prepared = [predictor.prepare("hello"), predictor.prepare({"text": "big world"})]
    assert predictor.predict(prepared) == [{"upper": "HELLO", "length": [5]}, {"upper": "BIG WORLD", "length": [9]}]
    assert v2.requests[0]["body"]["inputs"][0] == {
        "name": "text",
        "shape": [2],
        "datatype": "BYTES",
        "data": ["hello", "big world"],
    }
    for bad in ("", "   ", {"other": "x"}, 42):
        with pytest.raises(InvalidRecord):
            predictor.prepare(bad)


def test_5xx_429_and_timeouts_are_retried_then_given_up(v2: V2Server) -> None:
    predictor = predictor_for(scorer_card(v2.url))
    record = predictor.prepare({"a": 1, "b": 1, "c": 1})
    v2.failures = [(503, {}), (429, {"Retry-After": "0"})]
    assert predictor.predict([record])[0]["label"] in ("no", "yes")
    assert len(v2.requests) == 3

    v2.failures = [1.0]  # stalls past the 0.5 s timeout once
    assert predictor.predict([record])[0]["label"]
    assert len(v2.requests) == 5

    v2.failures = [(500, {}), (502, {}), (503, {})]
    with pytest.raises(RemoteEndpointUnavailable, match="3 times"):
        predictor.predict([record])


def test_a_4xx_is_the_records_fault_not_retried(v2: V2Server) -> None:
    predictor = predictor_for(scorer_card(v2.url))
    with pytest.raises(InvalidRecord, match=r"^the model endpoint refused the input$"):  # its reason is logged only
        predictor.predict([predictor.prepare({"a": -1, "b": 1, "c": 1})])
    assert len(v2.requests) == 1
    wrong = predictor_for(scorer_card(v2.url, endpoint=f"{v2.url}/v2/models/missing"))
    with pytest.raises(InvalidRecord, match=r"^the model endpoint refused the input$"):
        wrong.predict([[1.0, 1.0, 1.0]])


def test_the_credential_lives_in_the_secret_store_never_in_a_blob_a_card_or_a_log(
    v2: V2Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    blobs = InMemoryBlobStore()
    directory = tmp_path / "secrets"
    registry = BlobModelRegistry(blobs, secrets=LocalSecretStore(directory), check_endpoint=lambda url: None)
    registry.publish(scorer_card(v2.url, auth={"type": "bearer"}), None, {}, owner="acme", credential="s3cr3t-token")

    for blob in blobs.list_blobs("models"):  # no blob of the container a SAS might name holds it, by any path
        assert b"s3cr3t" not in blobs.read_bytes("models", blob.name), blob.name
    assert not [blob.name for blob in blobs.list_blobs("models") if blob.name.startswith("secrets/")]
    assert "s3cr3t" not in json.dumps(registry.get_model("acme", "remote-scorer"))
    assert "s3cr3t" not in json.dumps(registry.list_models("acme"))
    [stored] = list(directory.iterdir())
    assert stored.name.startswith("t4-acme-oip-") and stored.read_text() == "s3cr3t-token"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stat.S_IMODE(directory.stat().st_mode) == 0o700

    worker = BlobModelRegistry(blobs, secrets=LocalSecretStore(directory))  # another process, same data dir
    predictor = worker.load(worker.resolve("acme", ModelRef("remote-scorer")))
    predictor.predict([predictor.prepare({"a": 1, "b": 1, "c": 1})])
    assert v2.requests[-1]["headers"]["Authorization"] == "Bearer s3cr3t-token"
    assert "s3cr3t" not in caplog.text


def test_a_version_whose_card_cannot_be_written_leaves_no_credential_behind(tmp_path: Path) -> None:
    class FailingBlobs(InMemoryBlobStore):
        def write_bytes(self, container: str, path: str, data: bytes, *, content_type: str | None = None) -> str:
            if path.endswith("card.json"):
                raise OSError("storage is down")
            return super().write_bytes(container, path, data, content_type=content_type)

    directory = tmp_path / "secrets"
    registry = BlobModelRegistry(FailingBlobs(), secrets=LocalSecretStore(directory), check_endpoint=lambda u: None)
    card = {**scorer_card("https://models.example.com"), "auth": {"type": "bearer"}}
    with pytest.raises(OSError):
        registry.register_private("acme", card, None, credential="s3cr3t-token")
    assert not directory.exists() or not list(directory.iterdir())


def test_operator_cards_may_name_an_environment_secret_and_header_auth(v2: V2Server) -> None:
    registry = BlobModelRegistry(InMemoryBlobStore(), secret_lookup={"AML_KEY": "k-123"}.get)
    card = scorer_card(v2.url, auth={"type": "header", "headerName": "api-key", "secretName": "AML_KEY"})
    card["oip"]["headers"] = {"azureml-model-deployment": "blue", "Authorization": "ignored"}
    registry.publish(card, None, {})
    predictor = registry.load(registry.resolve("acme", ModelRef("remote-scorer")))
    predictor.predict([[1.0, 1.0, 1.0]])
    headers = {k.lower(): v for k, v in v2.requests[-1]["headers"].items()}
    assert headers["api-key"] == "k-123" and headers["azureml-model-deployment"] == "blue"
    assert "authorization" not in headers


@pytest.mark.parametrize(
    ("change", "credential", "problem"),
    [
        ({"endpoint": "https://127.0.0.1:8443/v2/models/m"}, None, "not allowed"),
        ({"endpoint": "https://10.1.2.3/v2/models/m"}, None, "not allowed"),
        ({"endpoint": "https://[::ffff:169.254.169.254]/v2/models/m"}, None, "not allowed"),
        ({"endpoint": "https://models.example.com/predict"}, None, "OIP model"),
        ({"endpoint": "https://user:pw@models.example.com/v2/models/m"}, None, "credentials"),
        ({"auth": {"type": "bearer", "secretName": "AIAAS_COSMOS_KEY"}}, None, "platform secret"),
        ({"auth": {"type": "bearer", "token": "abc"}}, "abc", "kind of credential"),
        ({"auth": {"type": "bearer"}}, None, "needs a credential"),
        ({}, "abc", 'type "none"'),
    ],
)
def test_a_tenants_remote_model_is_refused_when_unsafe(
    change: dict[str, Any], credential: str | None, problem: str
) -> None:
    card = {**scorer_card("https://models.example.com"), "endpoint": "https://models.example.com/v2/models/m", **change}
    with pytest.raises(InvalidInput, match=problem):
        BlobModelRegistry(InMemoryBlobStore()).register_private("acme", card, None, credential=credential)


def test_the_batch_pipeline_runs_a_remote_model(platform: Platform, v2: V2Server) -> None:
    fakes = fakes_of(platform)
    fakes.models.publish(scorer_card(v2.url), None, {}, owner="acme")
    rows = [
        {"id": "r1", "a": 0, "b": 0, "c": 0},
        {"id": "r2", "a": 2, "b": 2, "c": 2},
        {"id": "bad", "a": -1, "b": 0, "c": 0},
    ]
    path = "inbox/remote-scorer/rows.jsonl"
    data = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
    assert job is not None and job.model_version == "1"
    for message in fakes.queue.drain():
        finished = run_shard(platform, message)
    assert finished.counts.succeeded == 2 and finished.counts.failed == 1
    pages = list(fakes.results.iter_pages("acme", job.job_id))
    outputs = {item["id"]: item["output"]["label"] for page in pages for item in page.items}
    assert outputs == {"r1": "no", "r2": "yes"}
    [error] = [e for page in pages for e in page.errors]
    # Generic: what the endpoint said about the record goes to the server-side log, not into the tenant's errors.
    assert error["id"] == "bad" and "the model endpoint refused the input" in error["message"]


def test_without_a_secret_store_a_credential_is_refused_and_the_old_blob_path_is_never_read(tmp_path: Path) -> None:
    blobs = InMemoryBlobStore()
    card = {**scorer_card("https://models.example.com"), "auth": {"type": "bearer"}}
    bare = BlobModelRegistry(blobs, check_endpoint=lambda url: None)
    with pytest.raises(InvalidInput) as err:
        bare.register_private("acme", card, None, credential="s3cr3t-token")
    assert err.value.code == "CredentialStoreMissing" and list(blobs.list_blobs("models")) == []

    first = BlobModelRegistry(blobs, secrets=LocalSecretStore(tmp_path / "a"), check_endpoint=lambda url: None)
    first.register_private("acme", card, None, credential="s3cr3t-token")
    # A credential where the registry once kept them, a blob of the models container, is never read:
    blobs.write_bytes("models", "secrets/acme/remote-scorer/1.json", json.dumps({"credential": "old"}).encode())
    other = BlobModelRegistry(blobs, secrets=LocalSecretStore(tmp_path / "b"))  # a store without it
    with pytest.raises(RuntimeError, match="credential is not available"):
        other.load(other.resolve("acme", ModelRef("remote-scorer")))
    assert [m["name"] for m in other.list_models("acme")] == ["remote-scorer"]  # and `secrets/` is no model
