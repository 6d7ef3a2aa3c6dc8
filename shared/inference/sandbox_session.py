"""Predictors over sandbox children: SandboxedPredictor (records in, results out: online calls, handler and
session both in the child) and SessionProxy (an ONNX Runtime session in a child as the handlers see one:
`get_inputs`, `get_outputs`, `run`).

The batch path uses SessionProxy for a tenant's model: the handler (record checks, tokenizing, image decoding: the
platform's own code) runs in the worker as for any model, so records fail exactly as they would in-process, while
the tenant's bytes are parsed and executed only by the child. Tensors cross the pipe as raw bytes with their dtype
and shape, checked on the way back (numbers and booleans only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.domain.models import ModelCard
from shared.inference.sandbox import Key, SandboxPool

# What a tensor coming back from a child may be: numbers and booleans (never object arrays).
SAFE_KINDS = frozenset("fiub")


@dataclass(frozen=True)
class NodeArg:
    """The part of onnxruntime.NodeArg the handlers read."""

    name: str
    shape: list[Any]
    type: str


def encode(array: Any) -> tuple[dict[str, Any], bytes]:
    import numpy as np

    data = np.ascontiguousarray(array)
    if data.dtype.kind not in SAFE_KINDS:
        raise TypeError(f"a tensor of {data.dtype} cannot cross to or from a sandbox")
    return {"dtype": data.dtype.str, "shape": list(data.shape)}, data.tobytes()


def decode(meta: dict[str, Any], raw: bytes) -> Any:
    import numpy as np

    dtype = np.dtype(str(meta["dtype"]))
    shape = [int(dim) for dim in meta["shape"]]
    if dtype.kind not in SAFE_KINDS or any(dim < 0 for dim in shape):
        raise ValueError(f"a tensor of {dtype} {shape} is not accepted from a sandbox")
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != len(raw):
        raise ValueError(f"a tensor of {dtype} {shape} needs {count * dtype.itemsize} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class SessionProxy:
    """Stands in for onnxruntime.InferenceSession; the session itself lives in the pool's child."""

    def __init__(self, pool: SandboxPool, card: ModelCard, read_package: Callable[[], tuple[bytes, dict[str, bytes]]]):
        self._pool = pool
        self._key = pool.register(card, read_package, "session")
        ready = pool.start(self._key, "session")  # the handler reads inputs and outputs as it is built
        self._inputs = [NodeArg(str(i["name"]), list(i["shape"]), str(i["type"])) for i in ready.get("inputs", [])]
        self._outputs = [NodeArg(str(o["name"]), list(o["shape"]), str(o["type"])) for o in ready.get("outputs", [])]
        self.options = dict(ready.get("options") or {})

    @property
    def pid(self) -> int | None:
        return self._pool.pid(self._key, "session")

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names: list[str] | None, feeds: dict[str, Any]) -> list[Any]:
        metas, frames = [], []
        for name, value in feeds.items():
            meta, raw = encode(value)
            metas.append({"name": name, **meta})
            frames.append(raw)
        answer, raw_outputs = self._pool.exchange(
            self._key, "session", {"run": list(output_names or []), "feeds": metas}, frames
        )
        if "error" in answer:
            raise RuntimeError(str(answer["error"]))
        outputs = answer.get("outputs") or []
        if len(outputs) != len(raw_outputs):
            raise RuntimeError("the sandbox answered a different number of tensors than it described")
        return [decode(meta, raw) for meta, raw in zip(outputs, raw_outputs, strict=True)]


class SandboxedPredictor:
    """A Predictor whose model runs in the pool's child: records go there as they are and come back scored."""

    def __init__(self, card: ModelCard, pool: SandboxPool, key: Key, parameters: dict[str, Any] | None = None) -> None:
        self.card = card
        self._pool = pool
        self._key = key
        self._parameters = dict(parameters or {})

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._pool.pid(self._key)

    def start(self) -> None:
        """Loads the model in its child now rather than at the first call."""
        self._pool.start(self._key)

    def with_parameters(self, parameters: dict[str, Any]) -> SandboxedPredictor:
        return SandboxedPredictor(self.card, self._pool, self._key, {**self._parameters, **parameters})

    def prepare(self, record: Any) -> Any:
        return record  # prepared in the child, with the model's own code

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        return self.run_records(prepared)

    def run_records(self, records: list[Any]) -> list[dict[str, Any]]:
        """Prepares and predicts every record in the child; raises RecordRefused for the first bad one."""
        if not records:
            return []
        return [dict(result) for result in self._pool.call(self._key, records, self._parameters)]
