"""Open Inference Protocol (KServe V2) REST under /api/v2: health, metadata and infer for a caller's models.

Tensors are derived from the model card, never from per-model code here:

- inputs: a card with `features` takes `input` FP32 [-1, len(features)] (one row per record); an image model
  (`.png`/`.jpg` input types) takes `image` BYTES [-1] of encoded images; a text model (task `text*`/`zero-shot*`
  or `.txt` input) takes `text` BYTES [-1] of UTF-8 strings. Request-level `parameters` (e.g. zero-shot `labels`)
  go to the predictor's `with_parameters` when it has one.
- outputs: one tensor per key of the predictor's result dicts: str -> BYTES [N], bool -> BOOL [N], number ->
  FP32 [N], list of numbers -> FP32 [N, L], dict of numbers -> FP32 [N, K] with the keys in `parameters.labels`,
  anything else -> BYTES [N] of JSON text.

Both JSON tensors and the binary tensor data extension (`Inference-Header-Content-Length`, per-tensor
`binary_data_size`, `binary_data`/`binary_data_output` for outputs) are supported, as tritonclient uses them.
Every error on these routes is the V2 body `{"error": "<message>"}`.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import json
import logging
import math
import struct
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.api.auth import AS_READER, AS_SUBMITTER, Caller
from shared.domain.errors import InvalidRecord, PlatformError, UnknownModel
from shared.domain.models import MODEL_NAME_PATTERN, SELECTOR_PATTERN, ModelCard, ModelRef
from shared.inference.sandbox import RecordRefused
from shared.inference.sandbox_session import SandboxedPredictor
from shared.ports import Predictor
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

SERVER_NAME = "aiaas"
MODEL_PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "parameters"]
MAX_ROWS = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024
PREDICT_BATCH = 1000
HEADER_LENGTH = "Inference-Header-Content-Length"
# Request parameters the protocol (or tritonclient) defines; the rest are the model's own (e.g. `labels`).
RESERVED_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
)
NUMERIC_DTYPES: dict[str, str] = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
KNOWN_DTYPES = frozenset({*NUMERIC_DTYPES, "BOOL", "BYTES", "BF16"})


class V2Error(Exception):
    """An answer other than 200 on a V2 route: the status and the message of `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def v2_error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _platform_status(err: PlatformError) -> int:
    from shared.api.app import STATUS_BY_ERROR  # the API's one mapping; imported late (app imports this module)

    return next((code for kind, code in STATUS_BY_ERROR if isinstance(err, kind)), 500)


class V2Route(APIRoute):
    """Turns every failure on a V2 route, dependencies (auth) included, into the V2 error body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except V2Error as err:
                return v2_error(err.status, err.message)
            except PlatformError as err:
                from shared.api.app import public_message  # 401/403: one message, the reason only in the log

                status = _platform_status(err)
                return v2_error(status, public_message(status, err))
            except RequestValidationError as err:
                return v2_error(400, "; ".join(str(e.get("msg")) for e in err.errors()) or "invalid request")
            except StarletteHTTPException as err:
                return v2_error(err.status_code, str(err.detail))
            except Exception:
                logger.exception("V2 %s %s failed", request.method, request.url.path)
                return v2_error(500, "internal error")

        return handler


# Tensor descriptions from the card


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InputMapping:
    """How the model's one V2 input tensor becomes records: `tabular`, `text` or `image`."""

    kind: str
    spec: TensorSpec
    features: tuple[str, ...] = ()


def input_mapping(card: ModelCard) -> InputMapping | None:
    features = card.raw.get("features")
    if isinstance(features, list) and features:
        return InputMapping("tabular", TensorSpec("input", "FP32", [-1, len(features)]), tuple(map(str, features)))
    types = {t.lower() for t in card.input_types}
    if types & {".png", ".jpg", ".jpeg"} and ".txt" not in types:
        return InputMapping("image", TensorSpec("image", "BYTES", [-1]))
    if card.task.startswith(("text", "zero-shot")) or ".txt" in types:
        return InputMapping("text", TensorSpec("text", "BYTES", [-1]))
    return None


def _schema_tensor(name: str, schema: Any) -> TensorSpec:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "string":
        return TensorSpec(name, "BYTES", [-1])
    if kind == "boolean":
        return TensorSpec(name, "BOOL", [-1])
    if kind in ("number", "integer"):
        return TensorSpec(name, "FP32", [-1])
    if kind == "array" and isinstance(schema, dict):
        items = schema.get("items")
        item_type = items.get("type") if isinstance(items, dict) else None
        size = schema.get("maxItems") if schema.get("minItems") == schema.get("maxItems") else None
        width = size if isinstance(size, int) else -1
        if item_type in ("number", "integer"):
            return TensorSpec(name, "FP32", [-1, width])
        if item_type == "string":
            return TensorSpec(name, "BYTES", [-1, width])
    if kind == "object" and isinstance(schema, dict):
        properties = schema.get("properties")
        numeric = isinstance(properties, dict) and all(
            isinstance(p, dict) and p.get("type") in ("number", "integer") for p in properties.values()
        )
        if numeric and isinstance(properties, dict):
            fixed = properties and not schema.get("additionalProperties")
            return TensorSpec(name, "FP32", [-1, len(properties) if fixed else -1])
        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, dict) and extra.get("type") in ("number", "integer"):
            return TensorSpec(name, "FP32", [-1, -1])
    return TensorSpec(name, "BYTES", [-1])


def output_specs(card: ModelCard) -> list[TensorSpec]:
    schema = card.raw.get("outputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return []
    return [_schema_tensor(str(name), prop) for name, prop in properties.items()]


# Resolving and loading


def _resolve(plat: Platform, tenant: Caller, name: str, version: str | None) -> ModelCard:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise V2Error(404, f"no model named {name!r} is available to you")
    if version is not None and not SELECTOR_PATTERN.fullmatch(version):
        raise V2Error(404, f"model {name!r} has no version or alias {version!r}")
    try:
        return plat.models.resolve(tenant.tenant_id, ModelRef(name, version))
    except UnknownModel as err:
        raise V2Error(404, err.message) from None


def _load(plat: Platform, card: ModelCard) -> Predictor:
    try:  # a tenant's own ONNX model runs in a sandbox child, never in the API process
        return plat.models.load(card, isolated=True)
    except Exception:
        logger.exception("could not load %s@%s", card.name, card.version)
        raise V2Error(503, f"model {card.name!r} version {card.version!r} is not available right now") from None


def model_metadata(plat: Platform, tenant: Caller, name: str, version: str | None) -> dict[str, Any]:
    card = _resolve(plat, tenant, name, version)
    try:
        versions = [str(v) for v in plat.models.get_model(tenant.tenant_id, name).get("versions", [])]
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


# Request decoding


def _read_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise V2Error(400, f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= size <= len(body):
            raise V2Error(400, f"{HEADER_LENGTH} {size} is outside the body of {len(body)} bytes")
        json_part, binary = body[:size], body[size:]
    try:
        doc = json.loads(json_part)
    except (ValueError, RecursionError):
        raise V2Error(400, "the request is not valid JSON (or the binary header length is wrong)") from None
    if not isinstance(doc, dict):
        raise V2Error(400, "the request must be a JSON object with `inputs`")
    return doc, memoryview(binary)


def _flatten(data: Any) -> list[Any]:
    """Row-major elements of a flat or nested JSON list."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack: list[tuple[list[Any], int]] = [(data, 0)]
    while stack:
        items, index = stack[-1]
        if index == len(items):
            stack.pop()
            continue
        stack[-1] = (items, index + 1)
        item = items[index]
        if isinstance(item, list):
            if len(stack) > 32:
                raise V2Error(400, "`data` is nested too deeply")
            stack.append((item, 0))
        else:
            out.append(item)
    return out


def _split_bytes(buffer: memoryview, what: str) -> list[bytes]:
    """Elements of a binary BYTES tensor: each a 4-byte little-endian length, then that many bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(buffer):
        if offset + 4 > len(buffer):
            raise V2Error(400, f"{what}: truncated element length at byte {offset}")
        (size,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + size > len(buffer):
            raise V2Error(400, f"{what}: element of {size} bytes runs past the end of its data")
        items.append(bytes(buffer[offset : offset + size]))
        offset += size
    return items


@dataclass
class DecodedInput:
    name: str
    shape: list[int]
    values: list[Any] = field(default_factory=list)


def _decode_input(
    tensor: Any, index: int, mapping: InputMapping, binary: memoryview, offset: int
) -> tuple[DecodedInput, int]:
    if not isinstance(tensor, dict):
        raise V2Error(400, f"inputs[{index}] must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise V2Error(400, f"inputs[{index}] needs a `name`")
    if name != mapping.spec.name:
        raise V2Error(400, f"unknown input {name!r}: this model takes {mapping.spec.name!r}")
    what = f"input {name!r}"
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise V2Error(400, f"{what}: `shape` must be a list of integers")
    if any(d < 0 for d in shape):
        raise V2Error(400, f"{what}: `shape` {shape} has a negative dimension")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in KNOWN_DTYPES:
        raise V2Error(400, f"{what}: unknown `datatype` {datatype!r}")
    _check_input_type(what, mapping, datatype, shape)
    rows = shape[0]
    if rows > MAX_ROWS:
        raise V2Error(413, f"{what}: {rows} rows is more than the {MAX_ROWS} one request may carry")
    count = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error(400, f"{what}: `parameters` must be an object")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
            raise V2Error(400, f"{what}: `binary_data_size` must be a non-negative integer")
        if "data" in tensor:
            raise V2Error(400, f"{what}: give either `data` or binary data, not both")
        if offset + binary_size > len(binary):
            raise V2Error(400, f"{what}: binary_data_size {binary_size} runs past the end of the request body")
        chunk = binary[offset : offset + binary_size]
        values = _binary_values(what, datatype, chunk)
        offset += binary_size
    else:
        if "data" not in tensor:
            raise V2Error(400, f"{what}: `data` is missing (and no binary_data_size was given)")
        values = _json_values(what, mapping, datatype, _flatten(tensor["data"]))
    if len(values) != count:
        raise V2Error(400, f"{what}: shape {shape} holds {count} elements but the data has {len(values)}")
    if mapping.kind == "image" and binary_size is None:
        values = [_b64(what, i, v) for i, v in enumerate(values)]
    return DecodedInput(name, shape, values), offset


def _check_input_type(what: str, mapping: InputMapping, datatype: str, shape: list[int]) -> None:
    if mapping.kind == "tabular":
        if datatype not in NUMERIC_DTYPES:
            raise V2Error(400, f"{what} must be FP32 (or another numeric type), not {datatype}")
        width = len(mapping.features)
        if len(shape) != 2 or shape[1] != width:
            raise V2Error(400, f"{what}: shape must be [rows, {width}] (one row of the {width} features), got {shape}")
    else:
        if datatype != "BYTES":
            raise V2Error(400, f"{what} must be BYTES, not {datatype}")
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise V2Error(400, f"{what}: shape must be [n] (or [n, 1]), got {shape}")


def _binary_values(what: str, datatype: str, chunk: memoryview) -> list[Any]:
    if datatype == "BYTES":
        return list(_split_bytes(chunk, what))
    import numpy as np  # heavy: only when a binary tensor arrives

    dtype = np.dtype(NUMERIC_DTYPES[datatype])
    if len(chunk) % dtype.itemsize:
        raise V2Error(400, f"{what}: {len(chunk)} bytes is not a whole number of {datatype} elements")
    values: list[Any] = np.frombuffer(chunk, dtype=dtype).astype(np.float64).tolist()
    return values


def _json_values(what: str, mapping: InputMapping, datatype: str, elements: list[Any]) -> list[Any]:
    if datatype == "BYTES":
        for i, element in enumerate(elements):
            if not isinstance(element, str):
                raise V2Error(400, f"{what}: element {i} must be a string, got {type(element).__name__}")
        return elements
    for i, element in enumerate(elements):
        if isinstance(element, bool) or not isinstance(element, int | float):
            raise V2Error(400, f"{what}: element {i} must be a number, got {element!r:.40}")
    try:
        return [float(e) for e in elements]
    except OverflowError:  # a JSON integer beyond any float (json.loads keeps it exact)
        i = next(i for i, e in enumerate(elements) if isinstance(e, int) and abs(e) > 2**1000)
        raise V2Error(400, f"{what}: element {i} is beyond the float32 range (|x| <= 3.4028235e38)") from None


def _b64(what: str, index: int, value: Any) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise V2Error(400, f"{what}: element {index} must be base64 (JSON carries images base64-encoded)") from None


def _records(mapping: InputMapping, decoded: DecodedInput) -> list[Any]:
    if mapping.kind == "tabular":
        width = len(mapping.features)
        values = decoded.values
        return [dict(zip(mapping.features, values[i : i + width], strict=True)) for i in range(0, len(values), width)]
    if mapping.kind == "text":
        texts = []
        for i, value in enumerate(decoded.values):
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise V2Error(400, f"input {decoded.name!r}: element {i} is not UTF-8 text") from None
            texts.append({"text": value})
        return texts
    return [{"image": value, "id": None} for value in decoded.values]


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


# Output encoding


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    def raw(self) -> bytes:
        import numpy as np  # heavy: only when a binary tensor is returned

        if self.datatype == "BYTES":
            parts = []
            for item in self.data:
                encoded = item if isinstance(item, bytes) else str(item).encode("utf-8")
                parts.append(struct.pack("<I", len(encoded)) + encoded)
            return b"".join(parts)
        if self.datatype == "BOOL":
            return np.asarray(self.data, dtype=np.bool_).tobytes()
        return np.asarray(self.data, dtype="<f4").tobytes()

    def view(self, binary: bool) -> tuple[dict[str, Any], bytes]:
        body: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape}
        parameters = dict(self.parameters)
        raw = b""
        if binary:
            raw = self.raw()
            parameters["binary_data_size"] = len(raw)
        else:
            body["data"] = self.data
        if parameters:
            body["parameters"] = parameters
        return body, raw


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _encode_output(name: str, values: list[Any]) -> OutputTensor:
    n = len(values)
    if all(isinstance(v, str) for v in values):
        return OutputTensor(name, "BYTES", [n], values)
    if all(isinstance(v, bool) for v in values):
        return OutputTensor(name, "BOOL", [n], values)
    if all(_is_number(v) for v in values):
        return OutputTensor(name, "FP32", [n], [float(v) for v in values])
    if values and all(isinstance(v, list) for v in values):
        width = len(values[0])
        if all(len(v) == width for v in values):
            flat = [x for v in values for x in v]
            if all(_is_number(x) for x in flat):
                return OutputTensor(name, "FP32", [n, width], [float(x) for x in flat])
            if all(isinstance(x, str) for x in flat):
                return OutputTensor(name, "BYTES", [n, width], flat)
    if values and all(isinstance(v, dict) for v in values):
        keys = list(values[0])
        if all(list(v) == keys or set(v) == set(keys) for v in values) and all(
            _is_number(x) for v in values for x in v.values()
        ):
            flat = [float(v[k]) for v in values for k in keys]
            return OutputTensor(name, "FP32", [n, len(keys)], flat, {"labels": keys})
    return OutputTensor(name, "BYTES", [n], [json.dumps(v, default=str) for v in values])


def encode_outputs(results: list[dict[str, Any]]) -> list[OutputTensor]:
    names: dict[str, None] = {}
    for result in results:
        names.update(dict.fromkeys(result))
    return [_encode_output(name, [result.get(name) for result in results]) for name in names]


def _requested_outputs(doc: dict[str, Any], default_binary: bool) -> list[tuple[str, bool]] | None:
    requested = doc.get("outputs")
    if requested is None:
        return None
    if not isinstance(requested, list):
        raise V2Error(400, "`outputs` must be a list of {name}")
    chosen: list[tuple[str, bool]] = []
    for i, item in enumerate(requested):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise V2Error(400, f"outputs[{i}] must be an object with a `name`")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise V2Error(400, f"outputs[{i}]: `parameters` must be an object")
        if parameters.get("classification"):
            raise V2Error(400, "the classification extension is not supported: read the probabilities output")
        if parameters.get("shared_memory_region"):
            raise V2Error(400, "shared memory is not supported")
        binary = parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise V2Error(400, f"outputs[{i}]: `binary_data` must be true or false")
        chosen.append((item["name"], binary))
    return chosen


# Infer


@dataclass
class InferAnswer:
    header: dict[str, Any]
    binary: bytes


def run_inference(
    plat: Platform, tenant: Caller, name: str, version: str | None, body: bytes, header_length: str | None
) -> InferAnswer:
    card = _resolve(plat, tenant, name, version)
    doc, binary = _read_header(body, header_length)
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
    decoded, used = _decode_input(inputs[0], 0, mapping, binary, 0)
    if used != len(binary):
        raise V2Error(400, f"{len(binary) - used} bytes of binary data after the tensors' binary_data_size")
    requested = _requested_outputs(doc, default_binary)
    records = _records(mapping, decoded)
    if not records:
        raise V2Error(400, f"input {decoded.name!r} has no rows")

    predictor: Any = _load(plat, card)
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


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise V2Error(413, f"the request is {int(declared)} bytes; at most {MAX_BODY_BYTES} are accepted")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise V2Error(413, f"the request is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise V2Error(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error:
        raise V2Error(400, f"the request body is not valid {encoding} data") from None
    if len(inflated) > MAX_BODY_BYTES:
        raise V2Error(413, f"the request inflates to over {MAX_BODY_BYTES} bytes")
    return inflated


async def _infer(request: Request, plat: Platform, tenant: Caller, name: str, version: str | None) -> Response:
    body = await _read_body(request)
    answer = await run_in_threadpool(
        run_inference, plat, tenant, name, version, body, request.headers.get(HEADER_LENGTH.lower())
    )
    if not answer.binary and not any(
        "binary_data_size" in out.get("parameters", {}) for out in answer.header["outputs"]
    ):
        return JSONResponse(answer.header)
    header = json.dumps(answer.header, separators=(",", ":")).encode()
    return Response(
        header + answer.binary,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _server_version() -> str:
    try:
        return importlib.metadata.version("aiaas")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def oip_router(platform_dep: Any) -> APIRouter:
    """Routes under /api/v2; `platform_dep` is the API's Depends() marker of the Platform."""
    router = APIRouter(prefix="/api/v2", route_class=V2Route, tags=["Open Inference Protocol (V2)"])

    @router.get("/health/live")
    def server_live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready")
    def server_ready(plat: Platform = platform_dep) -> dict[str, bool]:
        return {"ready": plat is not None}

    @router.get("")
    def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": _server_version(), "extensions": list(EXTENSIONS)}

    @router.get("/models/{name}")
    def get_model_metadata(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> dict[str, Any]:
        return model_metadata(plat, tenant, name, None)

    @router.get("/models/{name}/versions/{version}")
    def get_model_version_metadata(
        name: str, version: str, plat: Platform = platform_dep, tenant: Caller = AS_READER
    ) -> dict[str, Any]:
        return model_metadata(plat, tenant, name, version)

    def ready(plat: Platform, tenant: Caller, name: str, version: str | None) -> dict[str, Any]:
        card = _resolve(plat, tenant, name, version)
        predictor = _load(plat, card)
        if isinstance(predictor, SandboxedPredictor):  # ready means loaded: in its child, then
            predictor.start()
        return {"name": card.name, "version": card.version, "ready": True}

    @router.get("/models/{name}/ready")
    def model_ready(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> dict[str, Any]:
        return ready(plat, tenant, name, None)

    @router.get("/models/{name}/versions/{version}/ready")
    def model_version_ready(
        name: str, version: str, plat: Platform = platform_dep, tenant: Caller = AS_READER
    ) -> dict[str, Any]:
        return ready(plat, tenant, name, version)

    @router.post("/models/{name}/infer")
    async def infer(
        name: str, request: Request, plat: Platform = platform_dep, tenant: Caller = AS_SUBMITTER
    ) -> Response:
        return await _infer(request, plat, tenant, name, None)

    @router.post("/models/{name}/versions/{version}/infer")
    async def infer_version(
        name: str, version: str, request: Request, plat: Platform = platform_dep, tenant: Caller = AS_SUBMITTER
    ) -> Response:
        return await _infer(request, plat, tenant, name, version)

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    def not_found(rest: str) -> Response:
        return v2_error(404, f"no Open Inference Protocol endpoint /api/v2/{rest}")

    return router
