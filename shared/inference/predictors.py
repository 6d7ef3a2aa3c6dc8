"""Model handlers over ONNX Runtime: each turns records into tensors and the model's outputs into results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.domain.models import ModelCard
from shared.inference.features import feature_values

if TYPE_CHECKING:
    import onnxruntime


# A tenant's model runs with bounded session options: at most this many threads, basic graph optimisations
# only (the extended ones fuse into contrib kernels), no arena (memory goes back as soon as a run ends).
BOUNDED_MAX_THREADS = 2


def new_session(model_bytes: bytes, *, threads: int = 0, bounded: bool = False) -> onnxruntime.InferenceSession:
    import onnxruntime  # heavy: only when a model is loaded

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = min(max(threads, 1), BOUNDED_MAX_THREADS) if bounded else threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if bounded:
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.add_session_config_entry("session.load_model_format", "ONNX")
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def handler_over(card: ModelCard, session: onnxruntime.InferenceSession, files: dict[str, bytes]) -> Any:
    """The card's handler over a session (raises KeyError for a handler that does not exist)."""
    handler = HANDLERS[card.handler]
    from_package = getattr(handler, "from_package", None)
    return from_package(card, session, files) if callable(from_package) else handler(card, session)


def build_predictor(
    card: ModelCard, artifact: bytes, files: dict[str, bytes], *, threads: int = 0, bounded: bool = False
) -> Any:
    """The card's handler over an ONNX Runtime session of the artifact (bytes already checked against the card);
    `bounded` for a tenant's own model (see BOUNDED_MAX_THREADS)."""
    if card.handler not in HANDLERS:
        raise RuntimeError(f"model {card.name}@{card.version}: no handler {card.handler!r}")
    return handler_over(card, new_session(artifact, threads=threads, bounded=bounded), files)


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
