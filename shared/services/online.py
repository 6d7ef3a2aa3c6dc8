"""Online inference over the Open Inference Protocol: a caller's model resolved, loaded (sandboxed) and run on
the records of one request (the HTTP routes are shared/api/oip.py, the tensor codec shared/inference/oip_codec.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from shared.domain.errors import InvalidRecord, UnknownModel
from shared.domain.models import MODEL_NAME_PATTERN, SELECTOR_PATTERN, ModelCard, ModelRef
from shared.inference.oip_codec import (
    RESERVED_PARAMETERS,
    V2Error,
    decode_input,
    encode_outputs,
    input_mapping,
    output_specs,
    read_header,
    records_of,
    requested_outputs,
)
from shared.inference.sandbox import RecordRefused
from shared.inference.sandbox_session import SandboxedPredictor
from shared.ports import Predictor
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

MODEL_PLATFORM = "onnxruntime_onnx"
PREDICT_BATCH = 1000


def resolve_model(plat: Platform, tenant_id: str, name: str, version: str | None) -> ModelCard:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise V2Error(404, f"no model named {name!r} is available to you")
    if version is not None and not SELECTOR_PATTERN.fullmatch(version):
        raise V2Error(404, f"model {name!r} has no version or alias {version!r}")
    try:
        return plat.models.resolve(tenant_id, ModelRef(name, version))
    except UnknownModel as err:
        raise V2Error(404, err.message) from None


def load_model(plat: Platform, card: ModelCard) -> Predictor:
    try:  # a tenant's own ONNX model runs in a sandbox child, never in the API process
        return plat.models.load(card, isolated=True)
    except Exception:
        logger.exception("could not load %s@%s", card.name, card.version)
        raise V2Error(503, f"model {card.name!r} version {card.version!r} is not available right now") from None


def model_metadata(plat: Platform, tenant_id: str, name: str, version: str | None) -> dict[str, Any]:
    card = resolve_model(plat, tenant_id, name, version)
    try:
        versions = [str(v) for v in plat.models.get_model(tenant_id, name).get("versions", [])]
    except UnknownModel:
        versions = [card.version]
    mapping = input_mapping(card)
    return {
        "name": card.name,
        "versions": versions or [card.version],
        "platform": MODEL_PLATFORM,
        "inputs": [mapping.spec.view()] if mapping else [],
        "outputs": [spec.view() for spec in output_specs(card)],
    }


def _model_parameters(card: ModelCard, parameters: dict[str, Any]) -> dict[str, Any]:
    """Request parameters meant for the model, with `labels` as a list (JSON text and `a,b,c` accepted too).

    When the card declares its parameters, only those are kept (others are ignored, as V2 allows) and checked.
    """
    declared = card.raw.get("parameters")
    own = {
        k: v
        for k, v in parameters.items()
        if k not in RESERVED_PARAMETERS and (not isinstance(declared, dict) or not declared or k in declared)
    }
    labels = own.get("labels")
    if isinstance(labels, str):
        text = labels.strip()
        if text.startswith("["):
            try:
                labels = json.loads(text)
            except ValueError:
                raise V2Error(400, "parameters.labels is not a valid JSON list") from None
        else:
            labels = [part.strip() for part in text.split(",") if part.strip()]
    if labels is not None:
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise V2Error(400, "parameters.labels must be a non-empty list of strings")
        own["labels"] = labels
    check = getattr(card, "check_parameters", None)
    if own and isinstance(declared, dict) and declared and callable(check):
        check(own)  # InvalidInput (400) when a value has the wrong type
    return own


@dataclass
class InferAnswer:
    header: dict[str, Any]
    binary: bytes


def run_inference(
    plat: Platform, tenant_id: str, name: str, version: str | None, body: bytes, header_length: str | None
) -> InferAnswer:
    card = resolve_model(plat, tenant_id, name, version)
    doc, binary = read_header(body, header_length)
    mapping = input_mapping(card)
    if mapping is None:
        raise V2Error(400, f"model {card.name!r} takes files only ({', '.join(card.input_types)}), not V2 tensors")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error(400, "`id` must be a string")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error(400, "`parameters` must be an object")
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise V2Error(400, "parameters.binary_data_output must be true or false")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error(400, f"`inputs` must be a non-empty list; this model takes {mapping.spec.name!r}")
    if len(inputs) > 1:
        names = [t.get("name") if isinstance(t, dict) else None for t in inputs]
        raise V2Error(400, f"this model takes one input, {mapping.spec.name!r}; got {names}")
    decoded, used = decode_input(inputs[0], 0, mapping, binary, 0)
    if used != len(binary):
        raise V2Error(400, f"{len(binary) - used} bytes of binary data after the tensors' binary_data_size")
    requested = requested_outputs(doc, default_binary)
    records = records_of(mapping, decoded)
    if not records:
        raise V2Error(400, f"input {decoded.name!r} has no rows")

    predictor: Any = load_model(plat, card)
    own_parameters = _model_parameters(card, parameters)
    configure = getattr(predictor, "with_parameters", None)
    if own_parameters and callable(configure):
        configured = configure(own_parameters)
        predictor = configured if configured is not None else predictor
    results: list[dict[str, Any]] = []
    if isinstance(predictor, SandboxedPredictor):  # prepared and predicted in the child, in one round trip
        try:
            results = predictor.run_records(records)
        except RecordRefused as err:
            raise V2Error(400, f"row {err.row}: {err.message}") from None
    else:
        prepared = []
        for row, record in enumerate(records):
            try:
                prepared.append(predictor.prepare(record))
            except InvalidRecord as err:
                raise V2Error(400, f"row {row}: {err.message}") from None
        for start in range(0, len(prepared), PREDICT_BATCH):
            results.extend(predictor.predict(prepared[start : start + PREDICT_BATCH]))
    if len(results) != len(records):
        raise RuntimeError(f"{card.name}@{card.version} gave {len(results)} results for {len(records)} rows")

    tensors = {tensor.name: tensor for tensor in encode_outputs(results)}
    if requested is None:
        selected = [(tensor, default_binary) for tensor in tensors.values()]
    else:
        unknown = [out for out, _ in requested if out not in tensors]
        if unknown:
            raise V2Error(400, f"unknown output {unknown[0]!r}: this model gives {list(tensors)}")
        selected = [(tensors[out], binary_flag) for out, binary_flag in requested]
    outputs, raw_parts = [], []
    for tensor, as_binary in selected:
        view, raw = tensor.view(as_binary)
        outputs.append(view)
        raw_parts.append(raw)
    header: dict[str, Any] = {"model_name": card.name, "model_version": card.version}
    if request_id is not None:
        header["id"] = request_id
    header["outputs"] = outputs
    return InferAnswer(header, b"".join(raw_parts))


def model_ready(plat: Platform, tenant_id: str, name: str, version: str | None) -> dict[str, Any]:
    """Ready means loaded: a sandboxed model's child is started here."""
    card = resolve_model(plat, tenant_id, name, version)
    predictor = load_model(plat, card)
    if isinstance(predictor, SandboxedPredictor):
        predictor.start()
    return {"name": card.name, "version": card.version, "ready": True}
