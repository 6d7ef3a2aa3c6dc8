"""The Open Inference Protocol (KServe V2) routes over the fakes and the real registry with the built package."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.api.oip import MAX_ROWS, encode_outputs
from shared.domain.models import ModelCard, ModelRef
from shared.inference.registry import BlobModelRegistry
from shared.services.platform import Platform
from tests.fakes import MODEL_NAME, add_tenant, make_platform, model_package_dir, sample_bytes

PRIVATE = "globex-bc"


@pytest.fixture
def plat() -> Platform:
    return make_platform()


@pytest.fixture
def keys(plat: Platform) -> dict[str, str]:
    return {tenant: add_tenant(plat, tenant) for tenant in ("acme", "globex")}


@pytest.fixture
def client(plat: Platform) -> TestClient:
    return TestClient(create_app(lambda: plat), raise_server_exceptions=False)


@pytest.fixture
def card(plat: Platform) -> dict[str, Any]:
    return plat.models.resolve("acme", ModelRef(MODEL_NAME)).raw


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rows(n: int = 10) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sample_bytes("breast-cancer.jsonl").splitlines()[:n]]


def matrix(card: dict[str, Any], sample: list[dict[str, Any]]) -> list[list[float]]:
    return [[row[f] for f in card["features"]] for row in sample]


def infer_body(data: Any, shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}], **extra}


def v2_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return str(body["error"])


def publish_private_copy(plat: Platform, tmp_path: Path, owner: str = "globex", name: str = PRIVATE) -> None:
    package = tmp_path / name
    shutil.copytree(model_package_dir(), package)
    card = json.loads((package / "card.json").read_text())
    card.update(name=name, owner=owner)
    (package / "card.json").write_text(json.dumps(card))
    registry = plat.models
    assert isinstance(registry, BlobModelRegistry)
    registry.publish_package(package)


def test_health_and_server_metadata_need_no_key(client: TestClient) -> None:
    assert client.get("/api/v2/health/live").json() == {"live": True}
    assert client.get("/api/v2/health/ready").json() == {"ready": True}
    meta = client.get("/api/v2").json()
    assert meta["name"] == "aiaas" and meta["version"] and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_from_the_card(client: TestClient, keys: dict[str, str], card: dict[str, Any]) -> None:
    meta = client.get(f"/api/v2/models/{MODEL_NAME}", headers=auth(keys["acme"])).json()
    assert meta == {
        "name": MODEL_NAME,
        "versions": [card["version"]],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, len(card["features"])]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ],
    }
    for version in (card["version"], "production"):
        answer = client.get(f"/api/v2/models/{MODEL_NAME}/versions/{version}", headers=auth(keys["acme"]))
        assert answer.status_code == 200 and answer.json() == meta
        ready = client.get(f"/api/v2/models/{MODEL_NAME}/versions/{version}/ready", headers=auth(keys["acme"]))
        assert ready.status_code == 200 and ready.json()["ready"] is True
    assert client.get(f"/api/v2/models/{MODEL_NAME}/ready", headers=auth(keys["acme"])).status_code == 200
    v2_error(client.get(f"/api/v2/models/{MODEL_NAME}/versions/99", headers=auth(keys["acme"])), 404)
    v2_error(client.get(f"/api/v2/models/{MODEL_NAME}/versions/99/ready", headers=auth(keys["acme"])), 404)


def test_infer_json_matches_the_predictor(
    plat: Platform, client: TestClient, keys: dict[str, str], card: dict[str, Any]
) -> None:
    sample = rows(20)
    body = infer_body(matrix(card, sample), [20, len(card["features"])], id="req-1")
    answer = client.post(f"/api/v2/models/{MODEL_NAME}/infer", json=body, headers=auth(keys["acme"]))
    assert answer.status_code == 200, answer.text
    assert "inference-header-content-length" not in answer.headers
    result = answer.json()
    assert result["model_name"] == MODEL_NAME and result["model_version"] == card["version"]
    assert result["id"] == "req-1"
    outputs = {out["name"]: out for out in result["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [20]
    probs = outputs["probabilities"]
    assert probs["datatype"] == "FP32" and probs["shape"] == [20, 2]
    assert probs["parameters"]["labels"] == card["labels"]
    table = np.asarray(probs["data"]).reshape(20, 2)
    assert np.allclose(table.sum(axis=1), 1.0, atol=1e-5)

    predictor = plat.models.load(ModelCard(card))
    direct = predictor.predict([predictor.prepare(row) for row in sample])
    assert outputs["label"]["data"] == [d["label"] for d in direct]
    expected = [[d["probabilities"][label] for label in card["labels"]] for d in direct]
    assert np.allclose(table, expected, atol=1e-5)
    accuracy = np.mean([label == row["expected"] for label, row in zip(outputs["label"]["data"], sample, strict=True)])
    assert accuracy >= 0.9


def test_infer_nested_flat_and_filtered(client: TestClient, keys: dict[str, str], card: dict[str, Any]) -> None:
    data = matrix(card, rows(3))
    width = len(card["features"])
    url = f"/api/v2/models/{MODEL_NAME}/versions/production/infer"
    nested = client.post(url, json=infer_body(data, [3, width]), headers=auth(keys["acme"])).json()
    flat_body = infer_body([x for row in data for x in row], [3, width], outputs=[{"name": "label"}])
    flat = client.post(url, json=flat_body, headers=auth(keys["acme"])).json()
    assert [out["name"] for out in flat["outputs"]] == ["label"]
    assert flat["outputs"][0]["data"] == next(o["data"] for o in nested["outputs"] if o["name"] == "label")
    assert "id" not in flat


def test_binary_tensors_as_tritonclient_sends_them(
    client: TestClient, keys: dict[str, str], card: dict[str, Any]
) -> None:
    from tritonclient.http import InferInput, InferRequestedOutput, InferResult
    from tritonclient.http._utils import _get_inference_request

    data = np.asarray(matrix(card, rows(8)), dtype=np.float32)
    tensor = InferInput("input", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=True)
    for outputs in (None, [InferRequestedOutput("probabilities", binary_data=True), InferRequestedOutput("label")]):
        body, json_size = _get_inference_request(
            inputs=[tensor],
            request_id="b1",
            outputs=outputs,
            sequence_id=0,
            sequence_start=False,
            sequence_end=False,
            priority=0,
            timeout=None,
            custom_parameters=None,
        )
        assert json_size is not None  # the input went as binary data
        headers = {**auth(keys["acme"]), "Inference-Header-Content-Length": str(json_size)}
        answer = client.post(f"/api/v2/models/{MODEL_NAME}/infer", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        length = answer.headers["inference-header-content-length"]
        result = InferResult.from_response_body(answer.content, header_length=int(length))
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (8, 2) and probabilities.dtype == np.float32
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        labels = result.as_numpy("label")
        assert labels.shape == (8,) and {x.decode() for x in labels} <= set(card["labels"])

    # gzip request bodies as tritonclient's request_compression_algorithm="gzip" sends them
    json_body = json.dumps(infer_body(data.tolist(), list(data.shape))).encode()
    headers = {**auth(keys["acme"]), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    answer = client.post(f"/api/v2/models/{MODEL_NAME}/infer", content=gzip.compress(json_body), headers=headers)
    assert answer.status_code == 200, answer.text


def test_auth_and_tenant_isolation(
    plat: Platform, client: TestClient, keys: dict[str, str], card: dict[str, Any], tmp_path: Path
) -> None:
    body = infer_body(matrix(card, rows(1)), [1, len(card["features"])])
    url = f"/api/v2/models/{MODEL_NAME}/infer"
    assert v2_error(client.post(url, json=body), 401) == "the credential is not valid"
    assert client.post(url, json=body).headers["www-authenticate"] == "Bearer"
    v2_error(client.post(url, json=body, headers=auth("not-a-key")), 401)
    v2_error(client.get(f"/api/v2/models/{MODEL_NAME}"), 401)

    publish_private_copy(plat, tmp_path)
    assert client.get(f"/api/v2/models/{PRIVATE}", headers=auth(keys["globex"])).status_code == 200
    assert client.post(f"/api/v2/models/{PRIVATE}/infer", json=body, headers=auth(keys["globex"])).status_code == 200
    for path in ("", "/ready", "/versions/1", "/versions/1/ready"):
        hidden = client.get(f"/api/v2/models/{PRIVATE}{path}", headers=auth(keys["acme"]))
        missing = client.get(f"/api/v2/models/no-such-model{path}", headers=auth(keys["acme"]))
        assert v2_error(hidden, 404) == v2_error(missing, 404).replace("no-such-model", PRIVATE)
    hidden = client.post(f"/api/v2/models/{PRIVATE}/infer", json=body, headers=auth(keys["acme"]))
    missing = client.post("/api/v2/models/no-such-model/infer", json=body, headers=auth(keys["acme"]))
    assert v2_error(hidden, 404) == v2_error(missing, 404).replace("no-such-model", PRIVATE)


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda b: {"inputs": []}, 400, "inputs"),
        (lambda b: {}, 400, "inputs"),
        (lambda b: [b], 400, "JSON object"),
        (lambda b: {"inputs": [{**b["inputs"][0], "name": "x"}]}, 400, "unknown input 'x'"),
        (lambda b: {"inputs": [{**b["inputs"][0], "datatype": "BYTES"}]}, 400, "FP32"),
        (lambda b: {"inputs": [{**b["inputs"][0], "datatype": "FP99"}]}, 400, "datatype"),
        (lambda b: {"inputs": [{**b["inputs"][0], "shape": [3, 30]}]}, 400, "elements"),
        (lambda b: {"inputs": [{**b["inputs"][0], "shape": [2, 29]}]}, 400, "shape"),
        (lambda b: {"inputs": [{**b["inputs"][0], "shape": "2x30"}]}, 400, "shape"),
        (lambda b: {"inputs": [{**b["inputs"][0], "shape": [-2, 30]}]}, 400, "negative"),
        (lambda b: {"inputs": [{**b["inputs"][0], "data": [["a"] * 30] * 2}]}, 400, "number"),
        (lambda b: {"inputs": [{**b["inputs"][0], "data": [[None] * 30] * 2}]}, 400, "number"),
        (lambda b: {"inputs": [{k: v for k, v in b["inputs"][0].items() if k != "data"}]}, 400, "data"),
        (lambda b: {"inputs": [{**b["inputs"][0], "data": [[float("nan")] * 30] * 2}]}, 400, "row 0"),
        (lambda b: {"inputs": [b["inputs"][0], b["inputs"][0]]}, 400, "one input"),
        (lambda b: {**b, "outputs": [{"name": "nope"}]}, 400, "unknown output 'nope'"),
        (lambda b: {**b, "outputs": [{"name": "label", "parameters": {"classification": 2}}]}, 400, "classif"),
        (lambda b: {**b, "outputs": "label"}, 400, "outputs"),
        (lambda b: {**b, "id": 5}, 400, "id"),
        (lambda b: {**b, "parameters": [1]}, 400, "parameters"),
        (lambda b: {"inputs": [{**b["inputs"][0], "shape": [0, 30], "data": []}]}, 400, "no rows"),
        (lambda b: {"inputs": [{**b["inputs"][0], "shape": [MAX_ROWS + 1, 30]}]}, 413, "rows"),
    ],
)
def test_malformed_requests_are_400_with_a_reason(
    client: TestClient, keys: dict[str, str], card: dict[str, Any], mutate: Any, status: int, reason: str
) -> None:
    body = mutate(infer_body(matrix(card, rows(2)), [2, len(card["features"])]))
    content = json.dumps(body, allow_nan=True).encode()
    answer = client.post(f"/api/v2/models/{MODEL_NAME}/infer", content=content, headers=auth(keys["acme"]))
    assert reason in v2_error(answer, status)


@pytest.mark.parametrize(
    "value",
    [3.5e38, -1e39, 1e300, 10**400, float("inf")],
    ids=["just-over", "negative", "float64-only", "huge-integer", "infinity"],
)
def test_a_value_beyond_float32_is_a_400_naming_the_row_and_feature_not_a_silent_infinity(
    client: TestClient, keys: dict[str, str], card: dict[str, Any], value: float
) -> None:
    data = matrix(card, rows(2))
    data[1][3] = value
    content = json.dumps(infer_body(data, [2, len(card["features"])]), allow_nan=True).encode()

    answer = client.post(f"/api/v2/models/{MODEL_NAME}/infer", content=content, headers=auth(keys["acme"]))

    message = v2_error(answer, 400)
    assert "float32" in message or "finite" in message
    if not isinstance(value, int):
        assert message.startswith("row 1") and repr(card["features"][3]) in message


def test_an_fp64_binary_tensor_beyond_float32_is_a_400_and_float32_max_itself_is_scored(
    client: TestClient, keys: dict[str, str], card: dict[str, Any]
) -> None:
    width = len(card["features"])
    url = f"/api/v2/models/{MODEL_NAME}/infer"
    for value, status in ((3.4028235e38, 200), (3.5e38, 400)):
        data = np.asarray(matrix(card, rows(1)), dtype="<f8")
        data[0, 0] = value
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, width],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": data.nbytes},
                    }
                ]
            }
        ).encode()
        headers = {**auth(keys["acme"]), "Inference-Header-Content-Length": str(len(head))}

        answer = client.post(url, content=head + data.tobytes(), headers=headers)

        assert answer.status_code == status, answer.text


def test_malformed_bodies_and_binary_framing(client: TestClient, keys: dict[str, str]) -> None:
    url = f"/api/v2/models/{MODEL_NAME}/infer"
    v2_error(client.post(url, content=b"{not json", headers=auth(keys["acme"])), 400)
    v2_error(client.post(url, content=b"\xff\xfe", headers=auth(keys["acme"])), 400)
    head = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}
    ).encode()
    for extra, length, reason in (
        (b"\0" * 119, str(len(head)), "past the end"),
        (b"\0" * 121, str(len(head)), "after the tensors"),
        (b"\0" * 120, "abc", "integer"),
        (b"\0" * 120, str(len(head) + 500), "outside"),
        (b"\0" * 120, str(len(head) - 1), "JSON"),
    ):
        headers = {**auth(keys["acme"]), "Inference-Header-Content-Length": length}
        assert reason in v2_error(client.post(url, content=head + extra, headers=headers), 400)
    headers = {**auth(keys["acme"]), "Inference-Header-Content-Length": str(len(head))}
    assert client.post(url, content=head + np.ones(30, "<f4").tobytes(), headers=headers).status_code == 200
    headers = {**auth(keys["acme"]), "Content-Encoding": "gzip"}
    assert "gzip" in v2_error(client.post(url, content=b"not gzip", headers=headers), 400)
    headers = {**auth(keys["acme"]), "Content-Encoding": "br"}
    v2_error(client.post(url, content=b"{}", headers=headers), 415)
    big = {**auth(keys["acme"]), "Content-Length": str(17 * 1024 * 1024)}
    v2_error(client.post(url, content=b"x" * (17 * 1024 * 1024), headers=big), 413)
    v2_error(client.get("/api/v2/nothing/here"), 404)


def test_outputs_are_derived_generically() -> None:
    tensors = encode_outputs(
        [
            {"label": "a", "ok": True, "score": 1, "embedding": [0.5, 0.5], "probabilities": {"x": 0.2, "y": 0.8}},
            {"label": "b", "ok": False, "score": 0.5, "embedding": [1.0, 0.0], "probabilities": {"y": 0.3, "x": 0.7}},
        ]
    )
    views = {t.name: t.view(binary=False)[0] for t in tensors}
    assert views["label"] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
    assert views["ok"] == {"name": "ok", "datatype": "BOOL", "shape": [2], "data": [True, False]}
    assert views["score"]["datatype"] == "FP32" and views["score"]["data"] == [1.0, 0.5]
    assert views["embedding"]["shape"] == [2, 2]
    assert views["probabilities"]["shape"] == [2, 2] and views["probabilities"]["data"] == [0.2, 0.8, 0.7, 0.3]
    assert views["probabilities"]["parameters"] == {"labels": ["x", "y"]}
    [odd] = encode_outputs([{"extra": {"a": "b"}}, {"extra": None}])
    assert odd.view(binary=False)[0]["data"] == ['{"a": "b"}', "null"]
    binary_view, raw = tensors[0].view(binary=True)
    assert binary_view["parameters"] == {"binary_data_size": len(raw)} and raw == b"\x01\0\0\0a\x01\0\0\0b"


class FakeTextOrImagePredictor:
    """Stands in for a text (or image) model: echoes what it got so the tests see the records and parameters."""

    def __init__(self, card: ModelCard, labels: list[str] | None = None) -> None:
        self.card = card
        self.labels = labels

    def with_parameters(self, parameters: dict[str, Any]) -> FakeTextOrImagePredictor:
        return FakeTextOrImagePredictor(self.card, parameters.get("labels"))

    def prepare(self, record: Any) -> Any:
        from shared.domain.errors import InvalidRecord

        value = record.get("text", record.get("image"))
        if not value:
            raise InvalidRecord("empty input")
        return value

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        labels = self.labels or ["none"]
        return [
            {
                "echo": value if isinstance(value, str) else value.hex(),
                "embedding": [float(len(value)), 1.0, 0.0],
                "scores": {label: 1.0 / len(labels) for label in labels},
            }
            for value in prepared
        ]


def publish_fake(plat: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, **card: Any) -> None:
    publish_private_copy(plat, tmp_path, owner="acme", name=name)
    registry = plat.models
    raw = json.loads((tmp_path / name / "card.json").read_text())
    for key in ("features", "labels", "outputSchema", "files", "drift"):  # the breast-cancer profile does not fit
        raw.pop(key, None)
    raw.update(card)
    # Re-publish the edited card as a new version (unchecked: its handler is faked), answer load() with the fake.
    assert isinstance(registry, BlobModelRegistry)
    registry.publish({**raw, "version": "2"}, (tmp_path / name / "model.onnx").read_bytes(), {}, owner="acme")
    registry.move_alias(name, "production", "2", by="test", owner="acme")
    real_load = registry.load
    monkeypatch.setattr(
        registry, "load", lambda c, **kw: FakeTextOrImagePredictor(c) if c.name == name else real_load(c, **kw)
    )


def test_text_model_takes_bytes(
    plat: Platform, client: TestClient, keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = {
        "type": "object",
        "properties": {"embedding": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}},
    }
    publish_fake(
        plat,
        tmp_path,
        monkeypatch,
        "fake-text",
        task="zero-shot-classification",
        inputTypes=[".txt", ".jsonl"],
        outputSchema=schema,
    )
    meta = client.get("/api/v2/models/fake-text", headers=auth(keys["acme"])).json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 3]}]
    texts = ["héllo", "two words"]
    body = {
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}],
        "parameters": {"labels": '["a", "b"]', "binary_data_output": False},
    }
    answer = client.post("/api/v2/models/fake-text/infer", json=body, headers=auth(keys["acme"]))
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["echo"]["data"] == texts and outputs["echo"]["datatype"] == "BYTES"
    assert outputs["embedding"]["shape"] == [2, 3] and outputs["embedding"]["data"][0] == 5.0
    assert outputs["scores"]["parameters"]["labels"] == ["a", "b"] and outputs["scores"]["shape"] == [2, 2]

    encoded = [t.encode() for t in texts]
    raw = b"".join(len(e).to_bytes(4, "little") + e for e in encoded)
    head = json.dumps(
        {
            "inputs": [
                {"name": "text", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "echo"}],
        }
    ).encode()
    headers = {**auth(keys["acme"]), "Inference-Header-Content-Length": str(len(head))}
    answer = client.post("/api/v2/models/fake-text/infer", content=head + raw, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == [{"name": "echo", "datatype": "BYTES", "shape": [2], "data": texts}]

    url = "/api/v2/models/fake-text/infer"
    for data, datatype, reason in (
        ([1, 2], "BYTES", "string"),
        (["a", ""], "BYTES", "row 1"),
        (["a"], "FP32", "BYTES"),
    ):
        bad = {"inputs": [{"name": "text", "shape": [len(data)], "datatype": datatype, "data": data}]}
        assert reason in v2_error(client.post(url, json=bad, headers=auth(keys["acme"])), 400)
    bad_utf8 = b"\x02\0\0\0\xff\xfe"
    head = json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}
    ).encode()
    headers = {**auth(keys["acme"]), "Inference-Header-Content-Length": str(len(head))}
    assert "UTF-8" in v2_error(client.post(url, content=head + bad_utf8, headers=headers), 400)
    ok = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    assert "labels" in v2_error(
        client.post(url, json={**ok, "parameters": {"labels": 3}}, headers=auth(keys["acme"])), 400
    )


def test_image_model_takes_encoded_bytes(
    plat: Platform, client: TestClient, keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_fake(
        plat, tmp_path, monkeypatch, "fake-image", task="image-classification", inputTypes=[".png", ".jpg", ".zip"]
    )
    meta = client.get("/api/v2/models/fake-image", headers=auth(keys["acme"])).json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}] and meta["outputs"] == []
    png = b"\x89PNG\r\n\x1a\n\0\0"
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}]}
    answer = client.post("/api/v2/models/fake-image/infer", json=body, headers=auth(keys["acme"]))
    assert answer.status_code == 200, answer.text
    assert next(o for o in answer.json()["outputs"] if o["name"] == "echo")["data"] == [png.hex()]
    body["inputs"][0]["data"] = ["not base64!"]
    assert "base64" in v2_error(
        client.post("/api/v2/models/fake-image/infer", json=body, headers=auth(keys["acme"])), 400
    )
