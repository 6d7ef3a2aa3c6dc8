"""Build digits-classifier: scikit-learn's load_digits (8x8, 0..16) with an RBF SVC exported to ONNX.

Serving decodes any image and normalises it (handlers_image.digit_features: invert, crop to the ink, pad
square, area-resize to 8x8). The training set is the original 8x8 digits plus each training digit rendered to
a 64x64 dark-on-light PNG and passed through that same preprocessing, so the model sees what serving makes.
Quality is measured twice on the held-out digits: on the dataset's own 8x8 arrays and on rendered PNGs through
the whole decode + preprocess path.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

from shared.modelbuild.common import (
    DRIFT_SOURCE,
    MODEL_FILE,
    PROFILE_FILE,
    BuildResult,
    build_key,
    data_fingerprint,
    dump_json,
    file_entry,
    library_versions,
    normalise_onnx,
    ort_session,
    skipped_result,
    up_to_date_card,
    utc_now_iso,
    with_profile,
    write_file_if_changed,
    write_package_atomically,
)

logger = logging.getLogger(__name__)

NAME = "digits-classifier"
VERSION = "1"
LABELS = [str(d) for d in range(10)]
INPUT_NAME = "input"
PROBABILITIES_OUTPUT = "probabilities"
TEST_SIZE = 0.25
SPLIT_RANDOM_STATE = 0
RENDER_SIDE = 64
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SVC_PARAMS: dict[str, Any] = {"C": 10.0, "gamma": "scale", "kernel": "rbf", "probability": True, "random_state": 0}
LIBRARIES = ["scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pillow"]
PROBABILITY_TOLERANCE = 1e-3
TRAINING_PARAMETERS: dict[str, Any] = {
    "estimator": "SVC (RBF kernel, Platt-scaled probabilities)",
    "svc": SVC_PARAMS,
    "inputScaling": "none: features are load_digits' 0..16 ink values",
    "augmentation": (
        f"each training digit also rendered to a {RENDER_SIDE}x{RENDER_SIDE} dark-on-light PNG (bilinear) "
        "and passed through the serving preprocessing"
    ),
    "split": {"testSize": TEST_SIZE, "randomState": SPLIT_RANDOM_STATE, "stratify": True},
    "targetOpset": TARGET_OPSET,
    "selection": (
        "RBF SVC beat LogisticRegression and MLPClassifier on held-out accuracy (dataset and rendered PNGs) "
        "and converts to ONNX (HistGradientBoosting does not with skl2onnx 1.20)"
    ),
}
SAMPLE_ZIP = "digits.zip"
SAMPLE_PNG = "digit-7.png"
SAMPLE_ZIP_COUNT = 30


def current_build_key() -> str:
    here = Path(__file__).resolve().parent
    sources = [here / "digits.py", here / "common.py", here.parent / "inference" / "handlers_image.py", DRIFT_SOURCE]
    params = {"name": NAME, "version": VERSION, "training": TRAINING_PARAMETERS}
    return build_key(sources, library_versions(LIBRARIES), params)


def load_split() -> dict[str, Any]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = np.ascontiguousarray(data.data, dtype=np.float64)
    y = np.ascontiguousarray(data.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=TEST_SIZE, random_state=SPLIT_RANDOM_STATE, stratify=y
    )
    return {"x": x, "y": y, "train_idx": train_idx, "test_idx": test_idx}


def render_png(digit: Any, side: int = RENDER_SIDE) -> bytes:
    """An 8x8 0..16 digit as a side x side dark-on-light greyscale PNG."""
    import numpy as np
    from PIL import Image

    grey = (255 - np.asarray(digit, dtype=np.float64).reshape(8, 8) / 16.0 * 255).round().astype(np.uint8)
    image = Image.fromarray(grey, mode="L").resize((side, side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def rendered_features(x: Any) -> Any:
    """Each digit rendered to PNG, decoded and preprocessed exactly as serving does."""
    import numpy as np

    from shared.inference.handlers_image import decode_grey, digit_features

    return np.stack([digit_features(decode_grey(render_png(row))) for row in x]).astype(np.float64)


def export_onnx(model: Any) -> bytes:
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = convert_sklearn(
        model,
        name=NAME,
        initial_types=[(INPUT_NAME, FloatTensorType([None, 64]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    normalise_onnx(onnx_model, name=NAME, version=VERSION, doc=f"{NAME} v{VERSION}: RBF SVC on 8x8 digits")
    onnx.checker.check_model(onnx_model, full_check=True)
    outputs = [o.name for o in onnx_model.graph.output]
    if PROBABILITIES_OUTPUT not in outputs:
        raise RuntimeError(f"expected output {PROBABILITIES_OUTPUT!r}, got {outputs}")
    return bytes(onnx_model.SerializeToString())


def onnx_probabilities(model_bytes: bytes, x: Any) -> Any:
    import numpy as np

    session = ort_session(model_bytes)
    return np.asarray(session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: x.astype(np.float32)})[0])


def accuracy(y: Any, probabilities: Any) -> float:
    return round(float((probabilities.argmax(axis=1) == y).mean()), 6)


def make_card(split: dict[str, Any], metrics: dict[str, Any], model_bytes: bytes, key: str) -> dict[str, Any]:
    return {
        "name": NAME,
        "version": VERSION,
        "task": "image-classification",
        "handler": "image-classifier",
        "description": (
            "Recognises a single handwritten digit (0-9) in an image. Any size, colour or greyscale, dark ink "
            "on light paper or light on dark: the image is cropped to the ink, squared and reduced to the 8x8 "
            "grid of scikit-learn's digits data set, then classified by an RBF support vector machine."
        ),
        "intendedUse": (
            "Demonstration of image batch inference (single images and zips of images); sorting scanned "
            "single-digit boxes such as form fields."
        ),
        "limitations": (
            "One centred digit per image: several digits, text, or clutter give meaningless answers (there is "
            "no 'not a digit' class). Trained on 1,347 digits from 43 writers (UCI, 1990s), reduced to 8x8, so "
            "unusual handwriting styles, thin strokes on very large images and heavy noise reduce accuracy. "
            "Probabilities come from Platt scaling and are only roughly calibrated."
        ),
        "inputTypes": [".png", ".jpg", ".jpeg", ".zip"],
        "inputSchema": {
            "type": "object",
            "description": "one image file, or a zip of images (one record per entry; id = entry name)",
            "properties": {"image": {"type": "string", "contentEncoding": "binary"}, "id": {"type": "string"}},
            "required": ["image"],
        },
        "labels": list(LABELS),
        "outputSchema": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": list(LABELS)},
                "probabilities": {"type": "object", "properties": {label: {"type": "number"} for label in LABELS}},
            },
            "required": ["label", "probabilities"],
        },
        "preprocessing": {
            "decode": "Pillow, any mode -> greyscale (transparency flattened onto white); at most 20 megapixels",
            "invert": "when the mean is above 127 (light background) so that ink is bright",
            "crop": "to the bounding box of ink (> 25% of the stretched range), padded to a square",
            "resize": "8x8, area average (antialiased)",
            "scale": "0..16 float32, the peak cell = 16",
        },
        "onnx": {
            "inputName": INPUT_NAME,
            "inputShape": [None, 64],
            "inputType": "float32",
            "probabilitiesOutput": PROBABILITIES_OUTPUT,
        },
        "metrics": metrics,
        "trainingData": {
            "source": "sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits, test part)",
            "rows": len(split["train_idx"]),
            "totalRows": len(split["y"]),
            "fingerprint": data_fingerprint(split["x"], split["y"]),
        },
        "trainingParameters": TRAINING_PARAMETERS,
        "license": {"weights": "MIT (this project)", "data": "CC BY 4.0 (UCI ML Repository)"},
        "tags": {"domain": "vision", "type": "image"},
        "createdAt": utc_now_iso(),
        "buildEnvironment": library_versions(LIBRARIES),
        "artifact": file_entry(MODEL_FILE, model_bytes),
        "buildKey": key,
    }


def drift_profile(x_train: Any, held_out_labels: list[str]) -> dict[str, Any]:
    """The reference profile: mean intensity and ink fraction of the training digits rendered as serving sees
    them (64x64 dark-on-light PNGs), predicted labels of the held-out digits through the same PNG path."""
    from shared.domain import drift

    stats = [drift.image_stats(render_png(row)) for row in x_train]
    if any(s is None for s in stats):
        raise RuntimeError("a rendered training digit did not decode")
    means = [s[0] for s in stats if s is not None]
    inks = [s[1] for s in stats if s is not None]
    features = [
        drift.numeric_reference("meanIntensity", means, source="imageMeanIntensity"),
        drift.numeric_reference("inkFraction", inks, source="imageInkFraction"),
    ]
    return drift.make_profile(
        NAME,
        VERSION,
        features,
        drift.label_reference(held_out_labels, known=LABELS),
        reference=f"the {len(x_train)} training digits rendered {RENDER_SIDE}x{RENDER_SIDE} dark-on-light PNG",
        prediction_reference=f"predicted labels of the {len(held_out_labels)} held-out digits as rendered PNGs",
    )


def package_dir(out_root: Path) -> Path:
    return out_root / NAME / VERSION


def build(out_root: Path, force: bool = False) -> BuildResult:
    import numpy as np
    from sklearn.svm import SVC

    started = time.perf_counter()
    target = package_dir(out_root)
    key = current_build_key()
    card = None if force else up_to_date_card(target, key)
    if card is not None:
        return skipped_result(NAME, VERSION, target, card, "accuracy", started)

    split = load_split()
    x, y, train, test = split["x"], split["y"], split["train_idx"], split["test_idx"]
    x_train = np.concatenate([x[train], rendered_features(x[train])])
    y_train = np.concatenate([y[train], y[train]])
    model = SVC(**SVC_PARAMS).fit(x_train, y_train)
    model_bytes = export_onnx(model)

    proba = onnx_probabilities(model_bytes, x[test])
    diff = float(np.abs(proba - model.predict_proba(x[test].astype(np.float32))).max())
    if diff > PROBABILITY_TOLERANCE:
        raise RuntimeError(f"ONNX probabilities differ from sklearn by {diff:.2e}")
    rendered = onnx_probabilities(model_bytes, rendered_features(x[test]))
    metrics = {
        "accuracy": accuracy(y[test], proba),
        "accuracyRenderedPng": accuracy(y[test], rendered),
        "heldOutRows": len(test),
        "renderedPng": f"held-out digits rendered {RENDER_SIDE}x{RENDER_SIDE} dark-on-light, full decode path",
        "split": f"stratified {int(TEST_SIZE * 100)}% held out, random_state={SPLIT_RANDOM_STATE}",
    }
    card = make_card(split, metrics, model_bytes, key)
    profile = with_profile(card, drift_profile(x[train], [LABELS[int(i)] for i in rendered.argmax(axis=1)]))
    write_package_atomically(target, {MODEL_FILE: model_bytes, PROFILE_FILE: profile, "card.json": dump_json(card)})
    logger.info("%s v%s built: %s", NAME, VERSION, metrics)
    return BuildResult(
        NAME,
        VERSION,
        target,
        False,
        "accuracy",
        metrics["accuracy"],
        len(model_bytes),
        time.perf_counter() - started,
        {"metrics": metrics},
    )


def write_samples(samples_dir: Path) -> list[Path]:
    """``digits.zip`` (30 held-out digits as ``digit-<i>-<label>.png``) and ``digit-7.png``."""
    split = load_split()
    x, y, test = split["x"], split["y"], split["test_idx"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in test[:SAMPLE_ZIP_COUNT]:
            info = zipfile.ZipInfo(f"digit-{int(i)}-{int(y[i])}.png", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, render_png(x[i]))
    seven = next(int(i) for i in test if int(y[i]) == 7)
    paths = [samples_dir / SAMPLE_ZIP, samples_dir / SAMPLE_PNG]
    write_file_if_changed(paths[0], buffer.getvalue())
    write_file_if_changed(paths[1], render_png(x[seven], side=96))
    return paths
