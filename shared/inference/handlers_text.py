"""Text handlers over a sentence-embedding ONNX model (all-MiniLM-L6-v2) and its `tokenizers` tokenizer.

The ONNX graph takes ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [batch, tokens]) and returns
``embedding`` [batch, 384]: mean-pooled over the attention mask and L2-normalised inside the graph. The
tokenizer (``tokenizer.json``) is an extra package file: the registry passes it to :meth:`from_package`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from shared.domain.errors import InvalidInput, InvalidRecord
from shared.domain.models import ModelCard

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENS = 256
SUB_BATCH = 32
MAX_TEXT_CHARS = 100_000
MIN_LABELS = 2
MAX_LABELS = 64
MAX_LABEL_CHARS = 200
MAX_TEMPLATE_CHARS = 500
DEFAULT_TEMPLATE = "This text is about {}."
DEFAULT_TEMPERATURE = 0.05
LABEL_CACHE_SIZE = 64
NO_LABELS = 'no labels: give the job parameters {"labels": [...]} or a labels field per record'


def record_text(record: Any) -> str:
    """The record's ``text`` (a string with something in it) or InvalidRecord naming the field."""
    if not isinstance(record, dict):
        raise InvalidRecord("a record must be an object with a text field", field="text")
    text = record.get("text")
    if not isinstance(text, str):
        raise InvalidRecord("the record needs a string field 'text'", field="text")
    if not text.strip():
        raise InvalidRecord("the text is empty", field="text")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRecord(f"the text is longer than {MAX_TEXT_CHARS} characters", field="text")
    return text


class TextEmbedding:
    """One 384-float, L2-normalised sentence embedding per text."""

    def __init__(
        self, card: ModelCard, session: onnxruntime.InferenceSession, tokenizer_json: bytes | None = None
    ) -> None:
        if tokenizer_json is None:
            raise RuntimeError(f"model {card.name}: needs its {TOKENIZER_FILE}; load it with from_package")
        from tokenizers import Tokenizer

        self.card = card
        self._session = session
        onnx_info = card.raw.get("onnx", {})
        self._output = onnx_info.get("embeddingOutput", "embedding")
        self._inputs = {i.name for i in session.get_inputs()}
        max_tokens = int(card.raw.get("tokenizer", {}).get("maxTokens", MAX_TOKENS))
        tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        pad_token = "[PAD]"
        pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)  # to the longest
        tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer = tokenizer

    @classmethod
    def from_package(
        cls, card: ModelCard, session: onnxruntime.InferenceSession, files: dict[str, bytes]
    ) -> TextEmbedding:
        """Builds the handler from the package's extra files (``tokenizer.json``), already hash-checked."""
        if TOKENIZER_FILE not in files:
            raise RuntimeError(f"model {card.name}: the package has no {TOKENIZER_FILE}")
        return cls(card, session, files[TOKENIZER_FILE])

    def prepare(self, record: Any) -> Any:
        return record_text(record)

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32 embeddings; texts are sorted by length into sub-batches to pad little."""
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), SUB_BATCH):
            chunk = order[start : start + SUB_BATCH]
            encodings = self._tokenizer.encode_batch([texts[i] for i in chunk])
            feeds = {
                "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
            }
            feeds = {name: value for name, value in feeds.items() if name in self._inputs}
            vectors = np.asarray(self._session.run([self._output], feeds)[0], dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[chunk] = vectors
        assert out is not None
        return out

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        import numpy as np

        vectors = self.embed([str(text) for text in prepared]).astype(np.float64).round(6)
        return [{"embedding": row} for row in vectors.tolist()]


def _labels(value: Any, error: type[InvalidInput], where: str) -> list[str]:
    def fail(message: str) -> InvalidInput:
        if error is InvalidRecord:
            return InvalidRecord(message, field="labels")
        return InvalidInput(message, code="InvalidParameters")

    if not isinstance(value, list) or not MIN_LABELS <= len(value) <= MAX_LABELS:
        raise fail(f"{where} labels must be a list of {MIN_LABELS} to {MAX_LABELS} strings")
    labels: list[str] = []
    for label in value:
        if not isinstance(label, str) or not label.strip():
            raise fail(f"{where} labels must be non-empty strings, got {label!r}")
        if len(label) > MAX_LABEL_CHARS:
            raise fail(f"{where} label {label[:40]!r}... is longer than {MAX_LABEL_CHARS} characters")
        labels.append(label.strip())
    if len(set(labels)) != len(labels):
        raise fail(f"{where} labels must be unique")
    return labels


class ZeroShotTextClassifier(TextEmbedding):
    """Classifies each text against labels named per job (or per record) by embedding similarity.

    Each label becomes a hypothesis (``template.format(label)``); the scores are a softmax over the cosine
    similarities between the text and each hypothesis, divided by the card's temperature.
    """

    def __init__(
        self, card: ModelCard, session: onnxruntime.InferenceSession, tokenizer_json: bytes | None = None
    ) -> None:
        super().__init__(card, session, tokenizer_json)
        zero_shot = card.raw.get("zeroShot", {})
        self._temperature = float(zero_shot.get("temperature", DEFAULT_TEMPERATURE))
        self._template = str(zero_shot.get("hypothesisTemplate", DEFAULT_TEMPLATE))
        self._labels: list[str] | None = None
        self._label_cache: OrderedDict[tuple[str, tuple[str, ...]], np.ndarray] = OrderedDict()

    @classmethod
    def from_package(
        cls, card: ModelCard, session: onnxruntime.InferenceSession, files: dict[str, bytes]
    ) -> ZeroShotTextClassifier:
        if TOKENIZER_FILE not in files:
            raise RuntimeError(f"model {card.name}: the package has no {TOKENIZER_FILE}")
        return cls(card, session, files[TOKENIZER_FILE])

    def with_parameters(self, parameters: dict[str, Any] | None) -> ZeroShotTextClassifier:
        """A copy bound to a job's ``{"labels": [...], "hypothesisTemplate": "... {} ..."}`` (shares the model)."""
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be an object", code="InvalidParameters")
        unknown = sorted(set(parameters) - {"labels", "hypothesisTemplate"})
        if unknown:
            raise InvalidInput(
                f"unknown parameters {unknown}; this model takes labels and hypothesisTemplate",
                code="InvalidParameters",
            )
        bound = copy.copy(self)
        if "labels" in parameters:
            bound._labels = _labels(parameters["labels"], InvalidInput, "the job's")
        template = parameters.get("hypothesisTemplate")
        if template is not None:
            if not isinstance(template, str) or template.count("{}") != 1 or len(template) > MAX_TEMPLATE_CHARS:
                raise InvalidInput(
                    "hypothesisTemplate must be a string with exactly one {} (where the label goes), "
                    f"at most {MAX_TEMPLATE_CHARS} characters",
                    code="InvalidParameters",
                )
            bound._template = template
        return bound

    def prepare(self, record: Any) -> Any:
        text = record_text(record)
        labels = self._labels
        if "labels" in record and record["labels"] is not None:
            labels = _labels(record["labels"], InvalidRecord, "the record's")
        if labels is None:
            raise InvalidRecord(NO_LABELS, field="labels")
        return (text, tuple(labels))

    def _label_vectors(self, labels: tuple[str, ...]) -> np.ndarray:
        key = (self._template, labels)
        cached = self._label_cache.get(key)
        if cached is not None:
            self._label_cache.move_to_end(key)
            return cached
        vectors = self.embed([self._template.replace("{}", label) for label in labels])
        self._label_cache[key] = vectors
        while len(self._label_cache) > LABEL_CACHE_SIZE:
            self._label_cache.popitem(last=False)
        return vectors

    def scores(self, prepared: list[Any]) -> list[tuple[tuple[str, ...], np.ndarray]]:
        import numpy as np

        texts = self.embed([text for text, _ in prepared])
        out: list[tuple[tuple[str, ...], np.ndarray]] = []
        for vector, (_, labels) in zip(texts, prepared, strict=True):
            logits = (self._label_vectors(labels) @ vector) / self._temperature
            logits = np.exp(logits - logits.max())
            out.append((labels, logits / logits.sum()))
        return out

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        results = []
        for labels, probabilities in self.scores(prepared):
            best = int(probabilities.argmax())
            results.append(
                {
                    "label": labels[best],
                    "scores": {label: round(float(p), 6) for label, p in zip(labels, probabilities, strict=True)},
                }
            )
        return results


HANDLERS: dict[str, type] = {"text-embedding": TextEmbedding, "zero-shot-text": ZeroShotTextClassifier}
READERS: dict[str, Any] = {}
