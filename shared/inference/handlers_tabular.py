"""Tabular handlers beyond plain classification: anomaly scoring over named numeric features."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shared.domain.errors import InvalidRecord
from shared.domain.models import ModelCard

if TYPE_CHECKING:
    import onnxruntime


def parse_features(record: Any, features: list[str]) -> list[float]:
    """The record's feature values in card order; CSV text and JSON numbers alike, finite only."""
    if not isinstance(record, dict):
        raise InvalidRecord("a record must be an object of feature values")
    values: list[float] = []
    for name in features:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
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


class TabularAnomalyDetector:
    """An isolation forest over named numeric features: an anomaly score (higher = stranger) and a flag.

    The ONNX graph gives the isolation-forest paper's anomaly score ``s(x, n)`` in (0, 1] (sklearn's
    ``-score_samples``); ``isAnomaly`` is ``score >= threshold`` with the threshold from the card.
    """

    def __init__(self, card: ModelCard, session: onnxruntime.InferenceSession) -> None:
        self.card = card
        self._session = session
        self._features: list[str] = list(card.raw["features"])
        onnx_info = card.raw.get("onnx", {})
        self._input = onnx_info.get("inputName") or session.get_inputs()[0].name
        self._output = onnx_info.get("scoreOutput") or session.get_outputs()[0].name
        self._threshold = float(card.raw["threshold"])

    def prepare(self, record: Any) -> list[float]:
        return parse_features(record, self._features)

    def scores(self, prepared: list[Any]) -> Any:
        import numpy as np

        matrix = np.asarray(prepared, dtype=np.float32).reshape(len(prepared), len(self._features))
        score = self._session.run([self._output], {self._input: matrix})[0]
        return np.asarray(score, dtype=np.float64).reshape(-1)

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        threshold = self._threshold
        return [{"score": round(float(s), 6), "isAnomaly": bool(s >= threshold)} for s in self.scores(prepared)]


HANDLERS: dict[str, type] = {"tabular-anomaly": TabularAnomalyDetector}
READERS: dict[str, Any] = {}
