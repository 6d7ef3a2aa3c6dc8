"""Unit tests for the model build step (shared.modelbuild), starting with breast-cancer-classifier."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from shared.modelbuild import breast_cancer
from shared.modelbuild.__main__ import main
from shared.modelbuild.common import read_card, write_package_atomically

PKG_REQUIRED_KEYS = {
    "name": str,
    "version": str,
    "task": str,
    "handler": str,
    "description": str,
    "intendedUse": str,
    "limitations": str,
    "inputTypes": list,
    "inputSchema": dict,
    "features": list,
    "labels": list,
    "outputSchema": dict,
    "onnx": dict,
    "metrics": dict,
    "trainingData": dict,
    "trainingParameters": dict,
    "license": dict,
    "tags": dict,
    "createdAt": str,
    "artifact": dict,
    "buildKey": str,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("modelbuild")
    out, samples = root / "models", root / "samples"
    assert main(["--out", str(out), "--samples", str(samples), "--only", "breast-cancer-classifier"]) == 0
    pkg = out / breast_cancer.NAME / breast_cancer.VERSION
    card = orjson.loads((pkg / "card.json").read_bytes())
    return {"out": out, "samples": samples, "pkg": pkg, "card": card}


@pytest.fixture(scope="module")
def split() -> breast_cancer.Split:
    return breast_cancer.load_split()


def _check_schema(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Tiny JSON-Schema subset check (type/properties/required/enum/additionalProperties)."""
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), where
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key!r}"
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), where
        for key, sub in props.items():
            if key in value:
                _check_schema(value[key], sub, f"{where}.{key}")
    elif kind == "number":
        assert isinstance(value, int | float) and not isinstance(value, bool), where
    elif kind == "string":
        assert isinstance(value, str), where
    if "enum" in schema:
        assert value in schema["enum"], where


def test_onnx_heldout_metrics_match_card(built: dict[str, Any], split: breast_cancer.Split) -> None:
    import onnxruntime as ort
    from sklearn.metrics import f1_score, roc_auc_score

    card = built["card"]
    session = ort.InferenceSession(str(built["pkg"] / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == card["onnx"]["inputName"] == "input"
    assert inp.type == "tensor(float)"
    assert list(inp.shape)[1] == 30
    assert card["onnx"]["probabilitiesOutput"] in [o.name for o in session.get_outputs()]

    x_test = split.x_test.astype(np.float32)
    (proba,) = session.run([card["onnx"]["probabilitiesOutput"]], {"input": x_test})
    assert proba.shape == (len(split.test_idx), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    predicted = proba.argmax(axis=1)
    accuracy = float((predicted == split.y_test).mean())

    metrics = card["metrics"]
    assert accuracy >= 0.93
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["rocAuc"] == pytest.approx(roc_auc_score(split.y_test, proba[:, 1]), abs=1e-6)
    assert metrics["f1Malignant"] == pytest.approx(f1_score(split.y_test, predicted, pos_label=0), abs=1e-6)
    assert metrics["heldOutRows"] == len(split.test_idx) == 143
    assert metrics["split"] == "stratified 25% held out, random_state=0"


def test_artifact_hash_and_size_match_card(built: dict[str, Any]) -> None:
    model_bytes = (built["pkg"] / "model.onnx").read_bytes()
    artifact = built["card"]["artifact"]
    assert artifact["file"] == "model.onnx"
    assert artifact["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert artifact["bytes"] == len(model_bytes)
    assert read_card(built["pkg"]) == built["card"]


def test_second_build_is_skipped(built: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    model_path = built["pkg"] / "model.onnx"
    before = (model_path.stat().st_mtime_ns, (built["pkg"] / "card.json").read_bytes())
    assert main(["--out", str(built["out"]), "--only", "breast-cancer-classifier"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("breast-cancer-classifier v1: skipped")
    assert "accuracy=" in line and "bytes" in line
    assert (model_path.stat().st_mtime_ns, (built["pkg"] / "card.json").read_bytes()) == before
    result = breast_cancer.build(built["out"])
    assert result.skipped and result.seconds < 1.0
    # no temp or backup siblings left behind
    assert sorted(p.name for p in built["pkg"].parent.iterdir()) == ["1"]


def test_card_has_and_satisfies_its_required_fields(built: dict[str, Any], split: breast_cancer.Split) -> None:
    card = built["card"]
    for key, kind in PKG_REQUIRED_KEYS.items():
        assert isinstance(card.get(key), kind), key
    assert card["name"] == "breast-cancer-classifier" and card["version"] == "1"
    assert card["task"] == "tabular-classification" and card["handler"] == "tabular-classifier"
    assert card["inputTypes"] == [".jsonl", ".csv"]
    assert card["labels"] == ["malignant", "benign"]
    assert card["features"] == split.feature_names and len(card["features"]) == 30
    assert card["features"][0] == "mean radius"
    schema = card["inputSchema"]
    assert schema["required"] == card["features"] == list(schema["properties"])
    assert schema["additionalProperties"] is True
    assert card["outputSchema"]["properties"]["label"]["enum"] == card["labels"]
    assert isinstance(card["onnx"]["opset"], int) and 13 <= card["onnx"]["opset"] <= 22
    data = card["trainingData"]
    assert data["rows"] == 426 and data["totalRows"] == 569
    assert data["fingerprint"].startswith("sha256:") and len(data["fingerprint"]) == 7 + 64
    assert card["createdAt"].endswith("Z")
    assert card["buildKey"] == breast_cancer.current_build_key()
    assert card["license"] == {"weights": "MIT (this project)", "data": "CC BY 4.0 (UCI ML Repository)"}

    # the card's own schemas accept the held-out samples and a model response
    first = orjson.loads((built["samples"] / "breast-cancer.jsonl").read_bytes().splitlines()[0])
    _check_schema(first, schema)
    response = {"label": "benign", "probabilities": {"malignant": 0.1, "benign": 0.9}}
    _check_schema(response, card["outputSchema"])
    with pytest.raises(AssertionError):
        _check_schema({k: v for k, v in first.items() if k != "mean radius"}, schema)


def test_samples_are_heldout_rows_and_deterministic(built: dict[str, Any], split: breast_cancer.Split) -> None:
    jsonl_path = built["samples"] / "breast-cancer.jsonl"
    csv_path = built["samples"] / "breast-cancer.csv"
    rows = [orjson.loads(line) for line in jsonl_path.read_bytes().splitlines()]
    assert len(rows) == len(split.test_idx)
    assert [r["id"] for r in rows] == [f"bc-{i}" for i in split.test_idx]
    for row, idx in zip(rows, split.test_idx, strict=True):
        assert row["expected"] == ["malignant", "benign"][split.y[idx]]
        assert [row[f] for f in split.feature_names] == split.x[idx].tolist()
    with csv_path.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == split.feature_names
    assert len(table) == 1 + 50
    assert [float(v) for v in table[1]] == split.x[split.test_idx[0]].tolist()

    before = (jsonl_path.read_bytes(), csv_path.read_bytes(), jsonl_path.stat().st_mtime_ns)
    breast_cancer.write_samples(built["samples"])
    assert (jsonl_path.read_bytes(), csv_path.read_bytes(), jsonl_path.stat().st_mtime_ns) == before


def test_build_key_tracks_training_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    key = breast_cancer.current_build_key()
    assert key == breast_cancer.current_build_key()
    changed = {**breast_cancer.TRAINING_PARAMETERS, "logisticRegression": {"C": 0.5}}
    monkeypatch.setattr(breast_cancer, "TRAINING_PARAMETERS", changed)
    assert breast_cancer.current_build_key() != key


def test_stale_package_is_rebuilt_identically(built: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "models"
    pkg = out / breast_cancer.NAME / breast_cancer.VERSION
    stale = {**built["card"], "buildKey": "0" * 64}
    write_package_atomically(pkg, {"model.onnx": b"old", "card.json": b"{}"})
    write_package_atomically(pkg, {"model.onnx": b"not a model", "card.json": orjson.dumps(stale)})
    assert (pkg / "model.onnx").read_bytes() == b"not a model"  # existing package dir was swapped
    result = breast_cancer.build(out)
    assert not result.skipped
    # deterministic training + normalised export: byte-identical artifact
    assert (pkg / "model.onnx").read_bytes() == (built["pkg"] / "model.onnx").read_bytes()
    assert sorted(p.name for p in pkg.parent.iterdir()) == ["1"]
