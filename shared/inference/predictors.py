"""Model handlers over ONNX Runtime: each turns records into tensors and the model's outputs into results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.domain.models import ModelCard
from shared.inference.features import feature_values

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
        return feature_values(record, self._features)

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


def _all_handlers() -> dict[str, Any]:
    from shared.inference import handlers_image, handlers_tabular, handlers_text

    return {
        "tabular-classifier": TabularClassifier,
        **handlers_tabular.HANDLERS,
        **handlers_image.HANDLERS,
        **handlers_text.HANDLERS,
    }


HANDLERS: dict[str, Any] = _all_handlers()
