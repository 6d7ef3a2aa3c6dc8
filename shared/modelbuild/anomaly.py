"""Build transaction-anomaly-detector: an IsolationForest on a documented, deterministic synthetic data set.

No public card-fraud data set ships inside a PyPI package, so :func:`generate` makes one (fixed seed). Normal
transactions come from the distributions below; about 2% are injected anomalies of four documented kinds. The
forest is trained on the normal rows of the training split only (labels are never used for fitting), the
threshold is the 99th percentile of the training scores (about 1% of normal traffic flagged), and ROC AUC,
precision and recall are measured on a held-out labelled split.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson

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

NAME = "transaction-anomaly-detector"
VERSION = "1"
INPUT_NAME = "input"
SCORE_OUTPUT = "score"
TREE_ATTRIBUTES = [
    "nodes_treeids",
    "nodes_nodeids",
    "nodes_featureids",
    "nodes_values",
    "nodes_modes",
    "nodes_truenodeids",
    "nodes_falsenodeids",
    "target_treeids",
    "target_nodeids",
    "target_ids",
    "target_weights",
]
SEED = 20240611
ROWS = 40_000
ANOMALY_RATE = 0.02
TEST_SIZE = 0.3
THRESHOLD_QUANTILE = 0.99
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
FEATURES = [
    "amount",
    "hourOfDay",
    "merchantRiskScore",
    "distanceFromHomeKm",
    "transactionsLast24h",
    "accountAgeDays",
    "amountToAvgRatio",
]
FOREST_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "max_samples": 256,
    "contamination": "auto",
    "max_features": 1.0,
    "bootstrap": False,
    "random_state": 0,
}
LIBRARIES = ["scikit-learn", "onnx", "onnxruntime", "numpy"]
SAMPLE_FILE = "transactions.jsonl"
SAMPLE_ROWS = 500
SCORE_TOLERANCE = 1e-4

GENERATOR = {
    "seed": SEED,
    "rows": ROWS,
    "anomalyRate": ANOMALY_RATE,
    "normal": {
        "avgAmount": "customer's usual amount, lognormal(mean=3.6, sigma=0.8)",
        "amount": "avgAmount * lognormal(0, 0.35), rounded to cents",
        "amountToAvgRatio": "amount / avgAmount",
        "hourOfDay": "round(normal(14, 4.5)) mod 24",
        "merchantRiskScore": "beta(2, 12)",
        "distanceFromHomeKm": "exponential(6)",
        "transactionsLast24h": "poisson(2.5)",
        "accountAgeDays": "uniform integer 30..3650",
    },
    "anomalies": {
        "bigNightPurchase": "amount x uniform(8, 40) of the usual, hour 1..4",
        "farRiskyMerchant": "distance uniform(300, 5000) km, merchantRiskScore beta(8, 2)",
        "burst": "transactionsLast24h 15..60, amount x uniform(2, 6)",
        "newAccountCashOut": "accountAgeDays 0..10, amount x uniform(10, 60), merchantRiskScore beta(5, 3)",
    },
}
TRAINING_PARAMETERS: dict[str, Any] = {
    "estimator": "IsolationForest",
    "isolationForest": FOREST_PARAMS,
    "fitOn": "normal rows of the training split only",
    "split": {"testSize": TEST_SIZE, "randomState": SEED, "stratify": True},
    "threshold": f"{THRESHOLD_QUANTILE} quantile of the training rows' scores",
    "generator": GENERATOR,
    "targetOpset": TARGET_OPSET,
    "onnxExport": "one TreeEnsembleRegressor (leaf = depth + c(leaf samples)), score = 2^(-sum / (trees c(256)))",
}


def current_build_key() -> str:
    here = Path(__file__).resolve().parent
    params = {"name": NAME, "version": VERSION, "training": TRAINING_PARAMETERS, "features": FEATURES}
    sources = [here / "anomaly.py", here / "common.py", DRIFT_SOURCE]
    return build_key(sources, library_versions(LIBRARIES), params)


def generate(rows: int = ROWS, seed: int = SEED) -> tuple[Any, Any, Any]:
    """``(x [rows, 7] float64, y [rows] 0/1, kind [rows] str)``: the documented synthetic transactions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    avg = rng.lognormal(3.6, 0.8, rows)
    amount = avg * rng.lognormal(0.0, 0.35, rows)
    hour = np.mod(np.round(rng.normal(14, 4.5, rows)), 24)
    risk = rng.beta(2, 12, rows)
    distance = rng.exponential(6.0, rows)
    burst = rng.poisson(2.5, rows).astype(np.float64)
    age = rng.integers(30, 3651, rows).astype(np.float64)

    y = np.zeros(rows, dtype=np.int64)
    kind = np.array(["normal"] * rows, dtype=object)
    n_anomalies = round(rows * ANOMALY_RATE)
    idx = rng.choice(rows, size=n_anomalies, replace=False)
    kinds = list(GENERATOR["anomalies"])
    for i, row in enumerate(idx):
        which = kinds[i % len(kinds)]
        y[row] = 1
        kind[row] = which
        if which == "bigNightPurchase":
            amount[row] = avg[row] * rng.uniform(8, 40)
            hour[row] = rng.integers(1, 5)
        elif which == "farRiskyMerchant":
            distance[row] = rng.uniform(300, 5000)
            risk[row] = rng.beta(8, 2)
        elif which == "burst":
            burst[row] = rng.integers(15, 61)
            amount[row] = avg[row] * rng.uniform(2, 6)
        else:
            age[row] = rng.integers(0, 11)
            amount[row] = avg[row] * rng.uniform(10, 60)
            risk[row] = rng.beta(5, 3)
    amount = np.round(amount, 2)
    x = np.column_stack(
        [amount, hour, np.round(risk, 4), np.round(distance, 2), burst, age, np.round(amount / avg, 4)]
    ).astype(np.float64)
    return x, y, kind


def load_split() -> dict[str, Any]:
    import numpy as np
    from sklearn.model_selection import train_test_split

    x, y, kind = generate()
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, random_state=SEED, stratify=y)
    return {"x": x, "y": y, "kind": kind, "train_idx": np.sort(train_idx), "test_idx": np.sort(test_idx)}


def average_path_length(n: Any) -> Any:
    """c(n): the average path length of an unsuccessful BST search among n points (Liu et al. 2008)."""
    import numpy as np

    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def export_onnx(forest: Any) -> bytes:
    """The forest as ONE ai.onnx.ml TreeEnsembleRegressor summing each leaf's path length, then the score.

    skl2onnx's converter emits a few nodes per tree (8,000 for 200 trees) and the session takes ~30 s to
    create; this graph is equivalent (checked against sklearn's score_samples) and loads in well under a second.
    Leaf value = depth + c(samples in leaf); score = 2 ** (-sum / (n_trees * c(max_samples))).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    attrs: dict[str, list[Any]] = {k: [] for k in TREE_ATTRIBUTES}
    for tree_id, (estimator, features) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
        tree = estimator.tree_
        depth = np.zeros(tree.node_count, dtype=np.int64)
        for node in range(tree.node_count):  # children always come after their parent
            for child in (tree.children_left[node], tree.children_right[node]):
                if child >= 0:
                    depth[child] = depth[node] + 1
        leaf_values = depth + average_path_length(tree.n_node_samples)
        for node in range(tree.node_count):
            left, right = int(tree.children_left[node]), int(tree.children_right[node])
            leaf = left < 0
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node)
            attrs["nodes_featureids"].append(0 if leaf else int(features[tree.feature[node]]))
            attrs["nodes_values"].append(0.0 if leaf else float(tree.threshold[node]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else left)
            attrs["nodes_falsenodeids"].append(0 if leaf else right)
            if leaf:
                attrs["target_treeids"].append(tree_id)
                attrs["target_nodeids"].append(node)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(leaf_values[node]))
    norm = float(len(forest.estimators_) * average_path_length([forest.max_samples_])[0])
    nodes = [
        helper.make_node(
            "TreeEnsembleRegressor",
            [INPUT_NAME],
            ["pathSum"],
            domain="ai.onnx.ml",
            n_targets=1,
            aggregate_function="SUM",
            post_transform="NONE",
            **attrs,
        ),
        helper.make_node("Div", ["pathSum", "norm"], ["meanNorm"]),
        helper.make_node("Neg", ["meanNorm"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["score2d"]),
        helper.make_node("Reshape", ["score2d", "flat"], [SCORE_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        NAME.replace("-", "_"),
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, len(FEATURES)])],
        [helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, [None])],
        initializer=[
            helper.make_tensor("norm", TensorProto.FLOAT, [], [norm]),
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", TARGET_OPSET[""]), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="aiaas-modelbuild",
    )
    model.ir_version = 8
    doc = f"{NAME} v{VERSION}: IsolationForest anomaly score s(x) in (0, 1]"
    normalise_onnx(model, name=NAME, version=VERSION, doc=doc)
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def onnx_scores(model_bytes: bytes, x: Any) -> Any:
    import numpy as np

    session = ort_session(model_bytes)
    (score,) = session.run([SCORE_OUTPUT], {INPUT_NAME: x.astype(np.float32)})
    return np.asarray(score, dtype=np.float64).reshape(-1)


def compute_metrics(y: Any, scores: Any, threshold: float, kind: Any) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    flagged = scores >= threshold
    recall_by_kind = {
        k: round(float(flagged[kind == k].mean()), 4) for k in GENERATOR["anomalies"] if np.any(kind == k)
    }
    return {
        "rocAuc": round(float(roc_auc_score(y, scores)), 6),
        "averagePrecision": round(float(average_precision_score(y, scores)), 6),
        "precision": round(float(precision_score(y, flagged, zero_division=0)), 6),
        "recall": round(float(recall_score(y, flagged)), 6),
        "falsePositiveRate": round(float(flagged[y == 0].mean()), 6),
        "recallByKind": recall_by_kind,
        "threshold": round(threshold, 6),
        "heldOutRows": len(y),
        "heldOutAnomalies": int(y.sum()),
        "split": f"stratified {int(TEST_SIZE * 100)}% held out (labelled), random_state={SEED}",
    }


def make_card(split: dict[str, Any], metrics: dict[str, Any], model_bytes: bytes, key: str) -> dict[str, Any]:
    threshold = metrics["threshold"]
    train_rows = int((split["y"][split["train_idx"]] == 0).sum())
    return {
        "name": NAME,
        "version": VERSION,
        "task": "anomaly-detection",
        "handler": "tabular-anomaly",
        "description": (
            "Scores card transactions for how unusual they are with an isolation forest over seven numeric "
            "features. Trained on SYNTHETIC transactions from a documented generator (no real customer data): "
            "the score is the isolation-forest anomaly score s(x) in (0, 1], higher = more anomalous."
        ),
        "intendedUse": (
            "Demonstration of unsupervised anomaly scoring in batch; a template for a detector trained on a "
            "tenant's own transactions. Flags rows for human review, never for automatic decisions."
        ),
        "limitations": (
            "The training data is synthetic (see trainingParameters.generator): the metrics say how well the "
            "forest finds the four injected anomaly kinds, not how it would do on real fraud. Real traffic has "
            "other distributions, seasonality and adversaries; retrain on real data before relying on it. The "
            f"threshold {threshold} flags about {round((1 - THRESHOLD_QUANTILE) * 100)}% of normal-looking rows."
        ),
        "inputTypes": [".jsonl", ".csv"],
        "inputSchema": {
            "type": "object",
            "properties": {f: {"type": "number"} for f in FEATURES},
            "required": list(FEATURES),
            "additionalProperties": True,
        },
        "features": list(FEATURES),
        "threshold": threshold,
        "outputSchema": {
            "type": "object",
            "properties": {"score": {"type": "number"}, "isAnomaly": {"type": "boolean"}},
            "required": ["score", "isAnomaly"],
        },
        "onnx": {
            "inputName": INPUT_NAME,
            "inputShape": [None, len(FEATURES)],
            "inputType": "float32",
            "scoreOutput": SCORE_OUTPUT,
            "score": "isolation-forest anomaly score s(x) = -sklearn score_samples(x), in (0, 1]",
        },
        "metrics": metrics,
        "trainingData": {
            "source": "synthetic: shared/modelbuild/anomaly.py generate() (seeded; see trainingParameters)",
            "rows": train_rows,
            "totalRows": len(split["y"]),
            "fingerprint": data_fingerprint(split["x"], split["y"]),
        },
        "trainingParameters": TRAINING_PARAMETERS,
        "license": {"weights": "MIT (this project)", "data": "synthetic, MIT (this project)"},
        "tags": {"domain": "finance", "type": "tabular", "data": "synthetic"},
        "createdAt": utc_now_iso(),
        "buildEnvironment": library_versions(LIBRARIES),
        "artifact": file_entry(MODEL_FILE, model_bytes),
        "buildKey": key,
    }


def drift_profile(x_train: Any, held_out_scores: Any) -> dict[str, Any]:
    """The reference profile: every feature over the training split's rows, the score histogram held out.

    All rows of the split, the injected anomalies too (not only the normal ones the forest was fitted on): traffic
    carries ~2% anomalies, and Wasserstein weighs their far tails (a 3,000 km distance), so a normal-only
    reference calls every realistic job drifted.
    """
    from shared.domain import drift

    features = [drift.numeric_reference(name, x_train[:, i]) for i, name in enumerate(FEATURES)]
    return drift.make_profile(
        NAME,
        VERSION,
        features,
        drift.score_reference(held_out_scores),
        reference=f"the {len(x_train)} rows of the training split (normal and injected anomalies)",
        prediction_reference=f"scores of the {len(held_out_scores)} held-out rows (normal and injected anomalies)",
    )


def package_dir(out_root: Path) -> Path:
    return out_root / NAME / VERSION


def build(out_root: Path, force: bool = False) -> BuildResult:
    import numpy as np
    from sklearn.ensemble import IsolationForest

    started = time.perf_counter()
    target = package_dir(out_root)
    key = current_build_key()
    card = None if force else up_to_date_card(target, key)
    if card is not None:
        return skipped_result(NAME, VERSION, target, card, "rocAuc", started)

    split = load_split()
    x, y = split["x"], split["y"]
    train_idx = split["train_idx"][y[split["train_idx"]] == 0]
    forest = IsolationForest(**FOREST_PARAMS).fit(x[train_idx])
    model_bytes = export_onnx(forest)

    train_scores = onnx_scores(model_bytes, x[train_idx])
    sk_train = -forest.score_samples(x[train_idx].astype(np.float32))
    diff = float(np.abs(train_scores - sk_train).max())
    if diff > SCORE_TOLERANCE:
        raise RuntimeError(f"ONNX scores differ from sklearn by {diff:.2e}")
    threshold = round(float(np.quantile(train_scores, THRESHOLD_QUANTILE)), 6)
    test = split["test_idx"]
    test_scores = onnx_scores(model_bytes, x[test])
    metrics = compute_metrics(y[test], test_scores, threshold, split["kind"][test])
    card = make_card(split, metrics, model_bytes, key)
    profile = with_profile(card, drift_profile(x[split["train_idx"]], test_scores))
    write_package_atomically(target, {MODEL_FILE: model_bytes, PROFILE_FILE: profile, "card.json": dump_json(card)})
    logger.info("%s v%s built: %s", NAME, VERSION, metrics)
    return BuildResult(
        NAME,
        VERSION,
        target,
        False,
        "rocAuc",
        metrics["rocAuc"],
        len(model_bytes),
        time.perf_counter() - started,
        {"metrics": metrics},
    )


def write_samples(samples_dir: Path) -> list[Path]:
    """``transactions.jsonl``: held-out rows with ids (~500, including every injected anomaly among them)."""
    import numpy as np

    split = load_split()
    test = split["test_idx"]
    anomalies = test[split["y"][test] == 1][:15]
    normals = test[split["y"][test] == 0][: SAMPLE_ROWS - len(anomalies)]
    rows = np.sort(np.concatenate([anomalies, normals]))
    lines = []
    for i in rows:
        record: dict[str, Any] = {"id": f"tx-{int(i):05d}"}
        for name, value in zip(FEATURES, split["x"][i], strict=True):
            record[name] = int(value) if name in {"hourOfDay", "transactionsLast24h", "accountAgeDays"} else value
        record["expected"] = str(split["kind"][i])
        lines.append(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    path = samples_dir / SAMPLE_FILE
    write_file_if_changed(path, b"".join(lines))
    return [path]
