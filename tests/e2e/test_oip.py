"""The Open Inference Protocol (KServe V2) on the local stack, driven by the public tritonclient[http] client."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from shared.bootstrap import get_platform
from shared.localhost.host import LocalHost

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "build/samples/breast-cancer.jsonl"
CARD = json.loads((REPO / "build/models/breast-cancer-classifier/1/card.json").read_text())
MODEL = "breast-cancer-classifier"
TEXTS = ["The cat sat on the mat.", "Quarterly revenue grew by twelve percent.", "Wie spät ist es?"]


def _key(api: httpx.Client) -> str:
    return api.headers["Authorization"].removeprefix("Bearer ")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def triton(stack: LocalHost) -> Any:
    # tritonclient takes host:port plus a base path, without the scheme.
    client = InferenceServerClient(url=stack.api_url.split("://", 1)[1], network_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def alpha(create_tenant: Callable[[str], httpx.Client]) -> httpx.Client:
    return create_tenant("oip-alpha")


def _features(rows: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    return np.asarray([[row[f] for f in CARD["features"]] for row in rows], dtype=np.float32)


def test_server_health_and_metadata(triton: Any, alpha: httpx.Client) -> None:
    headers = _auth(_key(alpha))
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata(headers=headers)
    assert meta["name"] == "aiaas" and "binary_tensor_data" in meta["extensions"]
    assert triton.is_model_ready(MODEL, headers=headers)
    assert triton.is_model_ready(MODEL, model_version=CARD["version"], headers=headers)
    assert not triton.is_model_ready(MODEL, model_version="999", headers=headers)
    model = triton.get_model_metadata(MODEL, headers=headers)
    assert model["name"] == MODEL and CARD["version"] in model["versions"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, len(CARD["features"])]}]
    assert {o["name"]: o["datatype"] for o in model["outputs"]} == {"label": "BYTES", "probabilities": "FP32"}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_breast_cancer_accuracy_as_the_card_says(triton: Any, alpha: httpx.Client, binary: bool) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    features = _features(rows)
    tensor = InferInput("input", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features, binary_data=binary)
    outputs = [
        InferRequestedOutput("label", binary_data=binary),
        InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = triton.infer(
        MODEL, [tensor], outputs=outputs, request_id="bc-all", headers=_auth(_key(alpha)), model_version="production"
    )
    response = result.get_response()
    assert response["model_name"] == MODEL and response["model_version"] == CARD["version"]
    assert response["id"] == "bc-all"
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("label")]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(rows), len(CARD["labels"]))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert labels == [CARD["labels"][i] for i in probabilities.argmax(axis=1)]
    accuracy = sum(label == row["expected"] for label, row in zip(labels, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(CARD["metrics"]["accuracy"], abs=0.01)


def test_default_outputs_are_binary(triton: Any, alpha: httpx.Client) -> None:
    # No requested outputs: tritonclient asks for every output as binary (binary_data_output).
    tensor = InferInput("input", [2, len(CARD["features"])], "FP32")
    tensor.set_data_from_numpy(_features([json.loads(line) for line in SAMPLE.read_text().splitlines()[:2]]))
    result = triton.infer(MODEL, [tensor], headers=_auth(_key(alpha)))
    assert result.as_numpy("probabilities").shape == (2, 2) and result.as_numpy("label").shape == (2,)
    assert all(o["parameters"]["binary_data_size"] > 0 for o in result.get_response()["outputs"])


def _text_models(api: httpx.Client) -> list[dict[str, Any]]:
    models = api.get("/v1/models").raise_for_status().json()["items"]
    return [
        m
        for m in models
        if m["task"].startswith(("text", "zero-shot")) or ".txt" in m["inputTypes"]
        if not {".png", ".jpg"} & set(m["inputTypes"]) or ".txt" in m["inputTypes"]
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_text_model_with_bytes_input(triton: Any, alpha: httpx.Client, binary: bool) -> None:
    models = _text_models(alpha)
    if not models:
        pytest.skip("no text model is built (build/models has none whose task is text* or that takes .txt)")
    names = [m["name"] for m in models]
    model = next((m for m in models if m["name"] == "text-embedding"), models[0])
    headers = _auth(_key(alpha))
    meta = triton.get_model_metadata(model["name"], headers=headers)
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}], names
    tensor = InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.asarray([t.encode() for t in TEXTS], dtype=np.object_), binary_data=binary)
    parameters = {"labels": json.dumps(["weather", "finance", "animals"])} if "zero-shot" in model["task"] else None
    result = triton.infer(model["name"], [tensor], headers=headers, parameters=parameters)
    outputs = result.get_response()["outputs"]
    assert outputs and all(o["shape"][0] == len(TEXTS) for o in outputs)
    if model["name"] == "text-embedding":
        embeddings = result.as_numpy("embedding")
        assert embeddings.shape == (len(TEXTS), 384) and embeddings.dtype == np.float32
        assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)
        assert not np.allclose(embeddings[0], embeddings[1])


def test_unauthenticated_and_other_tenants_private_model(
    triton: Any, alpha: httpx.Client, create_tenant: Callable[[str], httpx.Client], tmp_path: Path
) -> None:
    tensor = InferInput("input", [1, len(CARD["features"])], "FP32")
    tensor.set_data_from_numpy(_features([json.loads(SAMPLE.read_text().splitlines()[0])]), binary_data=False)
    with pytest.raises(InferenceServerException) as unauthenticated:
        triton.infer(MODEL, [tensor])
    assert unauthenticated.value.status() == "401"
    with pytest.raises(InferenceServerException) as bad_key:
        triton.infer(MODEL, [tensor], headers=_auth("aiaas_not-a-real-key"))
    assert bad_key.value.status() == "401"
    assert not triton.is_model_ready(MODEL)

    # A private copy of the model owned by oip-beta: oip-alpha must not be able to tell it exists.
    beta = create_tenant("oip-beta")
    private = "oip-beta-private-bc"
    package = tmp_path / private
    shutil.copytree(REPO / "build/models" / MODEL / CARD["version"], package)
    card = json.loads((package / "card.json").read_text())
    card.update(name=private, owner="oip-beta")
    (package / "card.json").write_text(json.dumps(card))
    get_platform().models.publish_package(package)  # type: ignore[attr-defined]

    assert triton.is_model_ready(private, headers=_auth(_key(beta)))
    result = triton.infer(private, [tensor], headers=_auth(_key(beta)))
    assert result.as_numpy("probabilities").shape == (1, 2)

    alpha_headers = _auth(_key(alpha))
    assert not triton.is_model_ready(private, headers=alpha_headers)
    errors = []
    for name in (private, "no-such-model"):
        with pytest.raises(InferenceServerException) as meta_error:
            triton.get_model_metadata(name, headers=alpha_headers)
        with pytest.raises(InferenceServerException) as infer_error:
            triton.infer(name, [tensor], headers=alpha_headers)
        assert meta_error.value.status() == infer_error.value.status() == "404"
        errors.append((meta_error.value.message(), infer_error.value.message()))
    assert errors[0] == tuple(m.replace("no-such-model", private) for m in errors[1])
    assert private not in [m["name"] for m in alpha.get("/v1/models").json()["items"]]
