"""Loads a built model package (build/models/<name>/1) through the project's handler classes, as the registry does."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.domain.models import ModelCard

MODELS_DIR = Path(__file__).resolve().parents[2] / "build" / "models"


def package(name: str, version: str = "1") -> Path:
    pkg = MODELS_DIR / name / version
    if not (pkg / "card.json").is_file():
        pytest.skip(f"{pkg} is missing: run `make models` to build the model packages")
    return pkg


def load_handler(name: str, handlers: dict[str, type], *, threads: int = 2) -> Any:
    """The handler for a built package: artifact and extra files hash-checked, from_package when defined."""
    import onnxruntime as ort

    pkg = package(name)
    card = ModelCard(orjson.loads((pkg / "card.json").read_bytes()))
    artifact = (pkg / card.artifact_file).read_bytes()
    assert hashlib.sha256(artifact).hexdigest() == card.artifact_sha256
    files: dict[str, bytes] = {}
    for entry in card.raw.get("files", []):
        data = (pkg / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        files[entry["file"]] = data
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
    cls = handlers[card.handler]
    if hasattr(cls, "from_package"):
        return cls.from_package(card, session, files)
    return cls(card, session)


CARD_KEYS = {
    "name": str,
    "version": str,
    "task": str,
    "handler": str,
    "description": str,
    "intendedUse": str,
    "limitations": str,
    "inputTypes": list,
    "inputSchema": dict,
    "outputSchema": dict,
    "metrics": dict,
    "trainingData": dict,
    "trainingParameters": dict,
    "license": dict,
    "tags": dict,
    "createdAt": str,
    "artifact": dict,
    "buildKey": str,
}


def check_card(card: ModelCard) -> None:
    for key, kind in CARD_KEYS.items():
        assert isinstance(card.raw.get(key), kind), f"card {card.name}: {key!r} missing or not {kind.__name__}"
    assert set(card.raw["trainingData"]) >= {"source", "rows", "fingerprint"}
    assert set(card.raw["artifact"]) == {"file", "sha256", "bytes"}
