"""Model handlers over ONNX Runtime: each turns records into tensors and the model's outputs into results."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shared.domain.errors import InvalidRecord
from shared.domain.models import ModelCard

if TYPE_CHECKING:
    import onnxruntime


def new_session(model_bytes: bytes, *, threads: int = 0) -> onnxruntime.InferenceSession:
    import onnxruntime  # heavy: only when a model is loaded

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class TabularClassifier:
    """A classifier over named numeric features (JSONL keys or CSV columns), giving a label and probabilities."""

    def __init__(self, card: ModelCard, session: onnxruntime.InferenceSession) -> None:
        self.card = card
        self._session = session
        self._features: list[str] = list(card.raw["features"])
        self._labels: list[str] = list(card.raw["labels"])
        onnx_info = card.raw.get("onnx", {})
        self._input = onnx_info.get("inputName") or session.get_inputs()[0].name
        self._output = onnx_info.get("probabilitiesOutput") or session.get_outputs()[-1].name

    def prepare(self, record: Any) -> list[float]:
        if not isinstance(record, dict):
            raise InvalidRecord("a record must be an object of feature values")
        try:
            values = [record[name] for name in self._features]
        except KeyError:
            return self._prepare_checked(record)
        # Fast path: plain numbers whose sum is finite (so each is); anything else is checked one by one.
        if set(map(type, values)) <= _JSON_NUMBERS and math.isfinite(sum(values)):
            return values
        return self._prepare_checked(record)

    def _prepare_checked(self, record: dict[str, Any]) -> list[float]:
        values: list[float] = []
        for name in self._features:
            value = record.get(name)
            if value is None or value == "":
                raise InvalidRecord(f"feature {name!r} is missing", field=name)
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidRecord(f"feature {name!r} must be a number, got {value!r}", field=name)
            try:
                number = float(value)
            except ValueError:
                raise InvalidRecord(f"feature {name!r} must be a number, got {value!r}", field=name) from None
            if not math.isfinite(number):
                raise InvalidRecord(f"feature {name!r} must be finite, got {value!r}", field=name)
            values.append(number)
        return values

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        import numpy as np

        matrix = np.asarray(prepared, dtype=np.float32)
        probabilities = self._session.run([self._output], {self._input: matrix})[0]
        best = probabilities.argmax(axis=1).tolist()
        labels = self._labels
        return [
            {"label": labels[top], "probabilities": dict(zip(labels, row, strict=True))}
            for top, row in zip(best, probabilities.round(6).tolist(), strict=True)
        ]


_JSON_NUMBERS = frozenset({int, float})


def _all_handlers() -> dict[str, Any]:
    from shared.inference import handlers_image, handlers_tabular, handlers_text

    return {
        "tabular-classifier": TabularClassifier,
        **handlers_tabular.HANDLERS,
        **handlers_image.HANDLERS,
        **handlers_text.HANDLERS,
    }


HANDLERS: dict[str, Any] = _all_handlers()
