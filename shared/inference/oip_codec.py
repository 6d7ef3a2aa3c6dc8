"""The Open Inference Protocol (KServe V2) tensor codec: a model card's tensors, request tensors to records, results to
output tensors, in JSON or with the binary tensor data extension.

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
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from shared.domain.models import ModelCard

MAX_ROWS = 10_000
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


# Request decoding


def read_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
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


def decode_input(
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


def records_of(mapping: InputMapping, decoded: DecodedInput) -> list[Any]:
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


def requested_outputs(doc: dict[str, Any], default_binary: bool) -> list[tuple[str, bool]] | None:
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
