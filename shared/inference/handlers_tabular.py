"""Tabular handlers beyond plain classification: anomaly scoring over named numeric features."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.domain.models import ModelCard
from shared.inference.features import feature_values

if TYPE_CHECKING:
    import onnxruntime


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
        return feature_values(record, self._features)

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
