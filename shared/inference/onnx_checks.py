"""Checks of a tenant's ONNX package: what the bytes declare (opsets, domains, external data) and one dummy record.

`inspect_model` reads the protobuf wire format itself (no `onnx` package at run time): it walks the model, its
graphs and every subgraph and tensor an attribute holds. Both run inside the sandbox child, never in the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shared.domain.errors import InvalidInput
from shared.domain.models import ModelCard
from shared.inference.predictors import HANDLERS, handler_over, new_session

# The standard operator sets ONNX Runtime 1.31 implements fully; a later opset or another domain (com.microsoft
# contrib ops, custom ops) is more runtime surface than a tenant's model needs.
MAX_OPSETS = {"": 21, "ai.onnx": 21, "ai.onnx.ml": 5}
MAX_NODES = 200_000
MAX_DEPTH = 16  # subgraphs in subgraphs (If, Loop, Scan)

# Field numbers of onnx.proto3 (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ...).
_MODEL_GRAPH, _MODEL_OPSET, _MODEL_FUNCTIONS = 7, 8, 25
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_OP, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_EXTERNAL, _TENSOR_LOCATION = 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2


class _Malformed(ValueError):
    pass


def _varint(data: memoryview, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, varint value or length-delimited bytes) of one message; fixed-width fields skipped."""
    offset = 0
    while offset < len(data):
        tag, offset = _varint(data, offset)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, offset = _varint(data, offset)
            yield number, value
        elif wire == 2:
            size, offset = _varint(data, offset)
            if offset + size > len(data):
                raise _Malformed("a field runs past the end of its message")
            yield number, data[offset : offset + size]
            offset += size
        elif wire == 1:
            offset += 8
        elif wire == 5:
            offset += 4
        else:
            raise _Malformed(f"wire type {wire}")


@dataclass
class _Walk:
    problems: list[str]
    declared: set[str]
    nodes: int = 0

    def add(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)


def inspect_model(artifact: bytes) -> list[str]:
    """What the model declares that a tenant's model may not: too new an opset, another domain, custom ops,
    model-local functions, external data files, too many nodes. Empty when none."""
    walk = _Walk(problems=[], declared=set())
    try:
        graphs = []
        for number, value in _fields(memoryview(artifact)):
            if number == _MODEL_OPSET and isinstance(value, memoryview):
                _opset(walk, value)
            elif number == _MODEL_GRAPH and isinstance(value, memoryview):
                graphs.append(value)
            elif number == _MODEL_FUNCTIONS:
                walk.add("model-local functions are not accepted")
        if not graphs:
            walk.add("the artifact holds no ONNX graph")
        for graph in graphs:
            _graph(walk, graph, 0)
    except _Malformed as err:
        walk.add(f"the artifact is not an ONNX model (malformed: {err})")
    if walk.nodes > MAX_NODES:
        walk.add(f"the graph has {walk.nodes} nodes; at most {MAX_NODES} are accepted")
    return walk.problems


def _opset(walk: _Walk, message: memoryview) -> None:
    domain, version = "", 0
    for number, value in _fields(message):
        if number == _OPSET_DOMAIN and isinstance(value, memoryview):
            domain = bytes(value).decode("utf-8", "replace")
        elif number == _OPSET_VERSION and isinstance(value, int):
            version = value
    walk.declared.add(domain)
    if domain not in MAX_OPSETS:
        walk.add(f"operator domain {domain!r} is not accepted (only the standard ai.onnx and ai.onnx.ml)")
    elif version > MAX_OPSETS[domain]:
        walk.add(f"opset {version} of {domain or 'ai.onnx'!r} is newer than the {MAX_OPSETS[domain]} accepted")


def _graph(walk: _Walk, message: memoryview, depth: int) -> None:
    if depth > MAX_DEPTH:
        walk.add(f"subgraphs are nested more than {MAX_DEPTH} deep")
        return
    for number, value in _fields(message):
        if not isinstance(value, memoryview):
            continue
        if number == _GRAPH_NODE:
            walk.nodes += 1
            _node(walk, value, depth)
        elif number == _GRAPH_INITIALIZER:
            _tensor(walk, value)
        elif number == _GRAPH_SPARSE:
            _sparse(walk, value)


def _node(walk: _Walk, message: memoryview, depth: int) -> None:
    op, domain = "", ""
    for number, value in _fields(message):
        if not isinstance(value, memoryview):
            continue
        if number == _NODE_OP:
            op = bytes(value).decode("utf-8", "replace")
        elif number == _NODE_DOMAIN:
            domain = bytes(value).decode("utf-8", "replace")
        elif number == _NODE_ATTRIBUTE:
            _attribute(walk, value, depth)
    if domain not in MAX_OPSETS:
        walk.add(f"operator {op!r} of domain {domain!r} is a custom op; only standard operators are accepted")


def _attribute(walk: _Walk, message: memoryview, depth: int) -> None:
    for number, value in _fields(message):
        if not isinstance(value, memoryview):
            continue
        if number in (_ATTR_TENSOR, _ATTR_TENSORS):
            _tensor(walk, value)
        elif number in (_ATTR_GRAPH, _ATTR_GRAPHS):
            _graph(walk, value, depth + 1)
        elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
            _sparse(walk, value)


def _tensor(walk: _Walk, message: memoryview) -> None:
    for number, value in _fields(message):
        if number == _TENSOR_EXTERNAL or (number == _TENSOR_LOCATION and value == 1):
            walk.add("tensors with external data files are not accepted: keep the weights inside the model")


def _sparse(walk: _Walk, message: memoryview) -> None:
    for number, value in _fields(message):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and isinstance(value, memoryview):
            _tensor(walk, value)


def bad(message: str) -> InvalidInput:
    return InvalidInput(message, code="InvalidModelPackage")


def check_package(card: ModelCard, artifact: bytes, files: dict[str, bytes], *, threads: int = 1) -> None:
    """Loads the package as a worker would (bounded session), checks the card's declared inputs, and runs one
    dummy record; raises InvalidInput (code InvalidModelPackage) with the reason."""
    if card.handler not in HANDLERS:
        raise bad(f"handler {card.handler!r} is not one of {sorted(HANDLERS)}")
    problems = inspect_model(artifact)
    if problems:
        raise bad("; ".join(problems))
    try:
        session = new_session(artifact, threads=threads, bounded=True)
    except Exception as err:  # onnxruntime's own errors: the bytes are not a model it can run
        raise bad(f"the artifact is not an ONNX model ONNX Runtime can load: {err}") from err
    example = card.raw.get("exampleRecord")
    if "features" in card.raw:
        example = _check_features(card, session, example)
    elif example is None and ".txt" in card.input_types:
        example = {"text": "An example sentence."}  # the form every text handler takes (a line of a .txt file)
        if card.handler.startswith("zero-shot") or card.task.startswith("zero-shot"):
            example["labels"] = ["one", "two"]  # zero-shot labels come per job or per record
    try:
        predictor = handler_over(card, session, files)
        if example is not None:
            outputs = predictor.predict([predictor.prepare(example)])
            if len(outputs) != 1 or not isinstance(outputs[0], dict):
                raise ValueError(f"one record gave {outputs!r}, not one result object")
    except InvalidInput as err:
        raise bad(f"the model refused a dummy record: {err.message}") from err
    except Exception as err:  # any failure here means the package cannot serve: say why
        raise bad(f"the model failed on a dummy record: {err}") from err


def _check_features(card: ModelCard, session: Any, example: Any) -> Any:
    features = card.raw["features"]
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise bad('"features" must be a non-empty list of feature names')
    if card.handler == "tabular-classifier" and (
        not isinstance(card.raw.get("labels"), list) or not card.raw["labels"]
    ):
        raise bad('a classifier card needs "labels"')
    input_name = (card.raw.get("onnx") or {}).get("inputName")
    inputs = {item.name: item for item in session.get_inputs()}
    onnx_input = inputs.get(input_name) if input_name else session.get_inputs()[0]
    if onnx_input is None:
        raise bad(f"the ONNX model has no input {input_name!r} (it has {sorted(inputs)})")
    shape = list(onnx_input.shape)
    if len(shape) != 2 or shape[1] != len(features):
        raise bad(
            f"the card declares {len(features)} features but the ONNX input {onnx_input.name!r} has shape {shape}"
        )
    if onnx_input.type != "tensor(float)":
        raise bad(f"the ONNX input {onnx_input.name!r} is {onnx_input.type}; tabular models take float")
    return example if example is not None else dict.fromkeys(features, 0.0)
