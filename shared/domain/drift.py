"""Drift of a job against its model's reference profile: mergeable bounded sketches and Evidently-style metrics."""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

# Why these metrics and thresholds (the anchors):
# - Evidently's default data-drift tests (evidentlyai/evidently, src/evidently/legacy/calculations/stattests/
#   registry.py `_get_default_stattest`; the "Data drift" docs): a numeric column
#   is tested with the two-sample Kolmogorov-Smirnov test (drift when p < 0.05) when the reference has at most
#   1,000 rows, else with the Wasserstein distance normalised by the reference standard deviation (drift when
#   > 0.1); a categorical column with chi-square (p < 0.05) at most 1,000 rows, else the Jensen-Shannon distance
#   (> 0.1); a numeric column with at most 5 distinct values counts as categorical (Evidently's z-test for 2 values
#   is the 2x2 chi-square test of homogeneity, which we use for every categorical column); the dataset drifts
#   when at least half of its columns drift (``drift_share=0.5``). Azure ML model monitoring offers the same
#   family (Jensen-Shannon, PSI, normalised Wasserstein, KS, chi-square).
# - One deliberate difference: Evidently chooses by the reference size only, because its current window is
#   usually as large. A batch job can be 10 rows, where a distance's own sampling noise (about 1/sqrt(n) of a
#   standard deviation) is larger than 0.1, so every small job would "drift". We use the distance only when BOTH
#   the reference and the job have more than 1,000 rows; otherwise the test, whose p-value accounts for n.
# - The chi-square test is the two-sample test of homogeneity (reference counts vs job counts, as
#   scipy.stats.chi2_contingency), not Evidently's goodness-of-fit against reference frequencies: the reference is
#   a sample too (a few hundred rows here), and treating it as exact raises the false-positive rate.
# - The prediction is one more column (Evidently's DataDriftPreset checks the prediction column with the same
#   rules), so it counts towards the share.
# - Embeddings (text-embedding): the distance between the job's mean embedding and the reference's, as in
#   Evidently's embeddings "distance" method (legacy/metrics/data_drift/embedding_drift_methods.py
#   DistanceDriftMethod: Euclidean, drifted above 0.2, or with bootstrap above the 95th percentile of the
#   reference's own resampled distances). Above 1,000 rows on both sides we use its 0.2; below, instead of a
#   bootstrap (a second pass), the analytic test: p < 0.05 for the squared shift over its expected value
#   under no drift, tr(Sigma) (1/n + 1/m), scaled to a chi-square with the reference's effective dimension
#   (Satterthwaite: (tr Sigma)^2 / tr(Sigma^2)). Reported with the shift and spread as ratios of the reference
#   spread (root mean squared distance to the centroid).
#
# Sketches hold counts only (no per-row storage), so a shard's sketch is bounded by bins x features whatever its row
# count, and merging is addition:
# - numeric: counts (and value sums, for the bin means) in the profile's bins. Edges are reference quantiles
#   (NUMERIC_BINS = 40 equal-mass bins) with open outer bins, so values outside the reference range still land.
#   KS is computed from the two CDFs at the bin edges: that is a lower bound of the exact statistic (the supremum
#   over a subset of points), off by at most the larger of the two samples' masses in one bin (2.5% of the
#   reference's; a job piled into one bin shows as a jump at its edges anyway), so the p-value is conservative.
#   40 bins keep that gap small against the smallest shift a few hundred reference rows can
#   resolve (~1.36 sqrt(2/400) = 0.1) while the sketch stays ~1 KB per feature. Wasserstein places each bin's mass
#   at its mean (from the sums), so tails beyond the reference range count by how far they went.
# - categorical: counts per reference category; up to MAX_NEW_CATEGORIES unseen ones, then "__other__".
# - embeddings: the count, the vector sum, the sum of squared norms and of distances to the reference centroid.
#
# p-values without scipy: KS with the asymptotic Kolmogorov distribution at sqrt(n m / (n + m)) D; chi-square with
# the regularised upper incomplete gamma function (series / continued fraction, Numerical Recipes 6.2).
# tests/unit/test_drift.py checks both against scipy.

PROFILE_FILE = "profile.json"
PROFILE_SCHEMA = 1
NUMERIC_BINS = 40
MAX_NEW_CATEGORIES = 20
OTHER = "__other__"
# Evidently's defaults.
SMALL_SAMPLE_ROWS = 1000
P_VALUE_THRESHOLD = 0.05
WASSERSTEIN_THRESHOLD = 0.1
JENSEN_SHANNON_THRESHOLD = 0.1
EMBEDDING_DISTANCE_THRESHOLD = 0.2
DATASET_DRIFT_SHARE = 0.5
CATEGORICAL_MAX_DISTINCT = 5  # a numeric column with this few distinct reference values is tested as categorical

SOURCES = ("field", "textChars", "imageMeanIntensity", "imageInkFraction")


# ---------------------------------------------------------------- p-values


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: 2 sum_{k>=1} (-1)^(k-1) exp(-2 k^2 x^2) (scipy's kstwobign.sf)."""
    if x <= 0:
        return 1.0
    if x < 0.2:
        # The alternating series converges slowly here; use the Jacobi theta form of the CDF instead.
        return 1.0 - math.sqrt(2 * math.pi) / x * sum(
            math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * x * x)) for k in range(1, 6)
        )
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-17:
            break
    return min(1.0, max(0.0, 2.0 * total))


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """Two-sample KS p-value, asymptotic: kolmogorov_sf(sqrt(n m / (n + m)) D)."""
    if n <= 0 or m <= 0:
        return 1.0
    return kolmogorov_sf(math.sqrt(n * m / (n + m)) * statistic)


def _gamma_series(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x) by its series (x < a + 1)."""
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(10_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) by Lentz's continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(statistic: float, df: float) -> float:
    """P(chi2_df > statistic) = Q(df / 2, statistic / 2) (scipy's chi2.sf)."""
    if df <= 0:
        return 1.0
    if statistic <= 0:
        return 1.0
    if math.isinf(statistic):
        return 0.0
    a, x = df / 2.0, statistic / 2.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_series(a, x))
    return max(0.0, _gamma_continued_fraction(a, x))


# ---------------------------------------------------------------- statistics on counts


def binned_ks(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """max |F_ref - F_cur| at the bin edges: a lower bound of the exact two-sample statistic."""
    n, m = ref_counts.sum(), cur_counts.sum()
    if n <= 0 or m <= 0:
        return 0.0
    return float(np.abs(np.cumsum(ref_counts) / n - np.cumsum(cur_counts) / m).max())


def _bin_points(counts: np.ndarray, sums: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Each bin's mean value; an empty bin gets its fallback point (it carries no weight anyway)."""
    return np.asarray(np.divide(sums, counts, out=fallback.astype(np.float64).copy(), where=counts > 0))


def weighted_wasserstein(
    points_a: np.ndarray, weights_a: np.ndarray, points_b: np.ndarray, weights_b: np.ndarray
) -> float:
    """W1 between two weighted point sets on the line: the integral of |F_a - F_b| (scipy's wasserstein_distance)."""
    wa, wb = weights_a.sum(), weights_b.sum()
    if wa <= 0 or wb <= 0:
        return 0.0
    values = np.concatenate([points_a, points_b])
    order = np.argsort(values, kind="mergesort")
    values = values[order]
    delta = np.diff(values)
    fa = np.cumsum(np.concatenate([weights_a / wa, np.zeros_like(weights_b)])[order])[:-1]
    fb = np.cumsum(np.concatenate([np.zeros_like(weights_a), weights_b / wb])[order])[:-1]
    return float(np.sum(np.abs(fa - fb) * delta))


def chi2_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p) of the chi-square test that both count vectors come from one distribution (2 x K table)."""
    keep = (ref_counts + cur_counts) > 0
    ref, cur = ref_counts[keep].astype(np.float64), cur_counts[keep].astype(np.float64)
    n, m = ref.sum(), cur.sum()
    if len(ref) < 2 or n <= 0 or m <= 0:
        return 0.0, 1.0
    total = ref + cur
    expected_ref = total * n / (n + m)
    expected_cur = total * m / (n + m)
    statistic = float(
        np.sum((ref - expected_ref) ** 2 / expected_ref) + np.sum((cur - expected_cur) ** 2 / expected_cur)
    )
    return statistic, chi2_sf(statistic, len(ref) - 1)


def jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log, the square root of the divergence), as scipy's jensenshannon."""
    n, m = ref_counts.sum(), cur_counts.sum()
    if n <= 0 or m <= 0:
        return 0.0
    p, q = ref_counts / n, cur_counts / m
    mid = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / mid[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


# ---------------------------------------------------------------- feature extraction


def text_chars(record: Any) -> float | None:
    """Characters of the record's text (a .txt line or a JSONL "text" field)."""
    text = record.get("text") if isinstance(record, dict) else None
    return float(len(text)) if isinstance(text, str) else None


def image_stats(data: Any) -> tuple[float, float] | None:
    """(mean grey 0..255, ink fraction) of an image's bytes; ink = pixels > 25% of full scale from the background.

    The background is light when the mean is above 127 (as the digits preprocessing decides). Large images are
    reduced to <= 64 px first: the statistics barely change and the cost stays small. Pillow is imported lazily
    (only image models need it).
    """
    if not isinstance(data, bytes | bytearray) or not data:
        return None
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            if im.width * im.height > 20_000_000:
                return None
            grey = im.convert("L")
            grey.thumbnail((64, 64))
            values = np.asarray(grey, dtype=np.float64)
    except Exception:  # an undecodable image is a missing value here; the handler reports it
        return None
    if values.size == 0:
        return None
    mean = float(values.mean())
    ink = 255.0 - values if mean > 127 else values
    return mean, float((ink > 0.25 * 255).mean())


def _number(value: Any) -> float | None:
    """A finite number, else None (missing). A boolean counts as 0/1, as numpy's conversion (the fast path) has it."""
    if not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------- reference profiles (build time)


def numeric_reference(name: str, values: Sequence[float] | np.ndarray, *, source: str = "field") -> dict[str, Any]:
    """A numeric feature's reference: quantile edges, counts and sums per bin, mean and std (population)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError(f"feature {name}: no finite reference values")
    distinct = np.unique(v)
    base: dict[str, Any] = {"name": name, "source": source, "rows": int(v.size)}
    if source == "field":
        base["field"] = name
    if len(distinct) <= CATEGORICAL_MAX_DISTINCT:
        counts = {_category_key(x): int((v == x).sum()) for x in distinct}
        return {**base, "kind": "categorical", "numericValues": True, "categories": counts}
    edges = np.unique(np.quantile(v, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
    idx = np.searchsorted(edges, v, side="left")
    counts_arr = np.bincount(idx, minlength=len(edges) + 1)
    sums = np.bincount(idx, weights=v, minlength=len(edges) + 1)
    return {
        **base,
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts_arr],
        "sums": [float(s) for s in sums],
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def categorical_reference(name: str, values: Iterable[Any], *, source: str = "field") -> dict[str, Any]:
    """A categorical feature's reference: counts per category."""
    counts: dict[str, int] = {}
    for value in values:
        if value is None:
            continue
        key = _category_key(value)
        counts[key] = counts.get(key, 0) + 1
    base: dict[str, Any] = {"name": name, "source": source, "kind": "categorical", "rows": sum(counts.values())}
    if source == "field":
        base["field"] = name
    return {**base, "categories": dict(sorted(counts.items()))}


def label_reference(labels: Iterable[str], *, field_name: str = "label", known: Sequence[str] = ()) -> dict[str, Any]:
    """The prediction reference of a classifier: predicted label counts on held-out data (every known label)."""
    ref = categorical_reference("prediction", labels)
    ref.pop("source")
    ref["field"] = field_name
    ref["categories"] = {str(k): 0 for k in known} | ref["categories"]
    return ref


def score_reference(scores: Sequence[float] | np.ndarray, *, field_name: str = "score") -> dict[str, Any]:
    """The prediction reference of a scorer: the score histogram on held-out data."""
    ref = numeric_reference("prediction", scores)
    ref.pop("source")
    ref["field"] = field_name
    return ref


def embedding_reference(vectors: np.ndarray, *, field_name: str = "embedding") -> dict[str, Any]:
    """Centroid, spread (RMS and mean distance to the centroid) and effective dimension of held-out embeddings."""
    e = np.asarray(vectors, dtype=np.float64)
    centroid = e.mean(axis=0)
    centred = e - centroid
    sq = (centred**2).sum(axis=1)
    trace = float(sq.mean())
    gram = centred @ centred.T / len(e)  # same nonzero eigenvalues as the covariance; tr(S^2) = ||gram||_F^2
    trace_sq = float((gram**2).sum())
    return {
        "name": "prediction",
        "kind": "embedding",
        "field": field_name,
        "rows": len(e),
        "dimensions": int(e.shape[1]),
        "centroid": [round(float(c), 8) for c in centroid],
        "meanSquaredDistance": trace,
        "meanDistance": float(np.sqrt(sq).mean()),
        "effectiveDimensions": trace * trace / trace_sq if trace_sq > 0 else 1.0,
    }


def make_profile(
    model_name: str,
    model_version: str,
    features: list[dict[str, Any]],
    prediction: dict[str, Any] | None,
    *,
    reference: str,
    prediction_reference: str | None = None,
) -> dict[str, Any]:
    """The profile document (profile.json) with an id over its content."""
    profile: dict[str, Any] = {
        "schemaVersion": PROFILE_SCHEMA,
        "model": {"name": model_name, "version": model_version},
        "reference": reference,
        "referenceRows": max((int(f["rows"]) for f in features), default=0),
        "features": features,
        "prediction": prediction,
    }
    if prediction_reference is not None:
        profile["predictionReference"] = prediction_reference
    profile["id"] = profile_id(profile)
    return profile


def profile_id(profile: dict[str, Any]) -> str:
    """sha256 (first 16 hex) over the profile without its id: sketches of different profiles never merge."""
    body = {k: v for k, v in profile.items() if k != "id"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def card_drift_section(profile: dict[str, Any]) -> dict[str, Any]:
    """card["drift"]: the profile file and the metric each column is tested with (chosen by reference rows)."""
    features = {f["name"]: _card_metric(f) for f in profile["features"]}
    prediction = profile.get("prediction")
    return {
        "profile": PROFILE_FILE,
        "profileId": profile.get("id") or profile_id(profile),
        "referenceRows": profile["referenceRows"],
        "metrics": {
            "features": features,
            "prediction": _card_metric(prediction) if prediction else None,
            "rule": (
                "Evidently's defaults: KS p<0.05 / chi-square p<0.05 when the reference or the job has <= 1000 "
                "rows, else normalised Wasserstein > 0.1 / Jensen-Shannon > 0.1; embeddings: centroid shift "
                "(chi-square p<0.05, or Euclidean distance > 0.2 above 1000 rows); the job drifts when >= half "
                "of the columns (features and prediction) drift"
            ),
        },
        "thresholds": {
            "pValue": P_VALUE_THRESHOLD,
            "wasserstein": WASSERSTEIN_THRESHOLD,
            "jensenShannon": JENSEN_SHANNON_THRESHOLD,
            "embeddingDistance": EMBEDDING_DISTANCE_THRESHOLD,
            "datasetShare": DATASET_DRIFT_SHARE,
            "smallSampleRows": SMALL_SAMPLE_ROWS,
        },
    }


def _card_metric(column: dict[str, Any]) -> str:
    large = _metric_name(column, None)
    small = _metric_name(column, 0)
    return large if large == small else f"{large} (jobs of over {SMALL_SAMPLE_ROWS} rows), {small} (smaller jobs)"


def _category_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _metric_name(column: dict[str, Any], rows: int | None) -> str:
    small = int(column["rows"]) <= SMALL_SAMPLE_ROWS or (rows is not None and rows <= SMALL_SAMPLE_ROWS)
    kind = column["kind"]
    if kind == "numeric":
        return "ks" if small else "wasserstein"
    if kind == "categorical":
        return "chi-square" if small else "jensen-shannon"
    return "centroid-shift" if small else "centroid-distance"


# ---------------------------------------------------------------- sketches (run time)


@dataclass
class _Column:
    """One column's counts; the layout follows its reference."""

    kind: str
    counts: np.ndarray | None = None  # numeric bins
    sums: np.ndarray | None = None
    categories: dict[str, int] = field(default_factory=dict)
    # Categories outside the reference (at most MAX_NEW_CATEGORIES, then OTHER); the rest are reference ones.
    new_keys: set[str] = field(default_factory=set)
    known: frozenset[str] = frozenset()
    edges: np.ndarray | None = None  # the reference's, as an array (cached)
    vector_sum: np.ndarray | None = None  # embedding
    sum_sq_norm: float = 0.0
    sum_ref_distance: float = 0.0
    rows: int = 0
    missing: int = 0

    @classmethod
    def empty(cls, ref: dict[str, Any]) -> _Column:
        kind = ref["kind"]
        if kind == "numeric":
            bins = len(ref["edges"]) + 1
            return cls(kind, counts=np.zeros(bins, dtype=np.int64), sums=np.zeros(bins, dtype=np.float64))
        if kind == "embedding":
            return cls(kind, vector_sum=np.zeros(int(ref["dimensions"]), dtype=np.float64))
        return cls(kind, known=frozenset(str(k) for k in ref.get("categories", {})))

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"rows": self.rows, "missing": self.missing}
        if self.kind == "numeric":
            assert self.counts is not None and self.sums is not None
            doc["counts"] = [int(c) for c in self.counts]
            doc["sums"] = [float(s) for s in self.sums]
        elif self.kind == "embedding":
            assert self.vector_sum is not None
            doc["sum"] = [float(s) for s in self.vector_sum]
            doc["sumSquaredNorm"] = self.sum_sq_norm
            doc["sumReferenceDistance"] = self.sum_ref_distance
        else:
            doc["categories"] = dict(self.categories)
            doc["newKeys"] = sorted(self.new_keys)
        return doc

    @classmethod
    def from_doc(cls, kind: str, doc: dict[str, Any]) -> _Column:
        column = cls(kind, rows=int(doc.get("rows", 0)), missing=int(doc.get("missing", 0)))
        if kind == "numeric":
            column.counts = np.asarray(doc["counts"], dtype=np.int64)
            column.sums = np.asarray(doc["sums"], dtype=np.float64)
        elif kind == "embedding":
            column.vector_sum = np.asarray(doc["sum"], dtype=np.float64)
            column.sum_sq_norm = float(doc["sumSquaredNorm"])
            column.sum_ref_distance = float(doc["sumReferenceDistance"])
        else:
            column.categories = {str(k): int(v) for k, v in dict(doc["categories"]).items()}
            column.new_keys = {str(k) for k in doc.get("newKeys", [])}
            column.known = frozenset(k for k in column.categories if k not in column.new_keys)
        return column

    def merge_in(self, other: _Column) -> None:
        if other.kind != self.kind:
            raise ValueError("sketch columns of different kinds")
        self.rows += other.rows
        self.missing += other.missing
        if self.kind == "numeric":
            assert self.counts is not None and self.sums is not None
            assert other.counts is not None and other.sums is not None
            if self.counts.shape != other.counts.shape:
                raise ValueError("sketch columns with different bins")
            self.counts = self.counts + other.counts
            self.sums = self.sums + other.sums
        elif self.kind == "embedding":
            assert self.vector_sum is not None and other.vector_sum is not None
            if self.vector_sum.shape != other.vector_sum.shape:
                raise ValueError("sketch columns with different dimensions")
            self.vector_sum = self.vector_sum + other.vector_sum
            self.sum_sq_norm += other.sum_sq_norm
            self.sum_ref_distance += other.sum_ref_distance
        else:
            self.known = self.known | other.known
            for key, count in other.categories.items():
                self._count(key, count)

    def _count(self, key: str, count: int) -> None:
        if (key in self.categories and key not in self.new_keys) or key in self.known:
            self.categories[key] = self.categories.get(key, 0) + count
            return
        if key not in self.new_keys and (key == OTHER or len(self.new_keys - {OTHER}) >= MAX_NEW_CATEGORIES):
            key = OTHER
        self.new_keys.add(key)
        self.categories[key] = self.categories.get(key, 0) + count

    def add_numeric(self, ref: dict[str, Any], values: list[float | None]) -> None:
        present = [v for v in values if v is not None]
        self.missing += len(values) - len(present)
        self.add_array(ref, np.asarray(present, dtype=np.float64))

    def add_array(self, ref: dict[str, Any], v: np.ndarray) -> None:
        """Count finite values of a float array (NaN, inf: missing)."""
        finite = np.isfinite(v)
        if not finite.all():
            self.missing += int((~finite).sum())
            v = v[finite]
        if not len(v):
            return
        assert self.counts is not None and self.sums is not None
        if self.edges is None:
            self.edges = np.asarray(ref["edges"], dtype=np.float64)
        idx = np.searchsorted(self.edges, v, side="left")
        bins = len(self.counts)
        self.counts = self.counts + np.bincount(idx, minlength=bins)
        self.sums = self.sums + np.bincount(idx, weights=v, minlength=bins)
        self.rows += len(v)

    def add_categories(self, values: list[Any]) -> None:
        tally: dict[str, int] = {}  # tallied first: a batch has few distinct labels, each placed once
        for value in values:
            if value is None:
                self.missing += 1
                continue
            key = value if type(value) is str else _category_key(value)
            tally[key] = tally.get(key, 0) + 1
        for key, count in tally.items():
            self._count(key, count)
            self.rows += count

    def add_embeddings(self, ref: dict[str, Any], vectors: list[Any]) -> None:
        dims = int(ref["dimensions"])
        good = [v for v in vectors if isinstance(v, list | tuple) and len(v) == dims]
        self.missing += len(vectors) - len(good)
        if not good:
            return
        assert self.vector_sum is not None
        try:
            e = np.asarray(good, dtype=np.float64)
        except (TypeError, ValueError):
            self.missing += len(good)
            return
        centroid = np.asarray(ref["centroid"], dtype=np.float64)
        self.vector_sum = self.vector_sum + e.sum(axis=0)
        self.sum_sq_norm += float((e**2).sum())
        self.sum_ref_distance += float(np.linalg.norm(e - centroid, axis=1).sum())
        self.rows += len(good)


class DriftSketch:
    """Mergeable, bounded counts of a job's inputs and outputs in the layout of one reference profile."""

    def __init__(
        self,
        profile_id_: str,
        features: list[_Column],
        prediction: _Column | None,
        *,
        records: int = 0,
        failed: int = 0,
        profile: dict[str, Any] | None = None,
    ) -> None:
        self.profile_id = profile_id_
        self.features = features
        self.prediction = prediction
        self.records = records
        self.failed = failed
        self._profile = profile
        self._numeric_fields: list[tuple[int, str]] | None = None

    @classmethod
    def empty(cls, profile: dict[str, Any]) -> DriftSketch:
        features = [_Column.empty(ref) for ref in profile["features"]]
        pred_ref = profile.get("prediction")
        prediction = _Column.empty(pred_ref) if pred_ref else None
        return cls(profile.get("id") or profile_id(profile), features, prediction, profile=profile)

    @property
    def rows(self) -> int:
        """Records seen (each input record, failed or not)."""
        return self.records

    def add(self, records: list[Any], outputs: Sequence[dict[str, Any] | None]) -> None:
        """Count a batch: `records` are the reader's values, `outputs` aligned (None for a failed record)."""
        if self._profile is None:
            raise ValueError("a sketch read from a document cannot add rows; start from DriftSketch.empty(profile)")
        if len(records) != len(outputs):
            raise ValueError("records and outputs must be aligned")
        profile = self._profile
        self.records += len(records)
        self.failed += sum(1 for o in outputs if o is None)
        images: list[tuple[float, float] | None] | None = None
        matrix = self._numeric_matrix(profile, records)
        for i, (column, ref) in enumerate(zip(self.features, profile["features"], strict=True)):
            source = ref.get("source", "field")
            if matrix is not None and i in matrix:
                column.add_array(ref, matrix[i])
                continue
            if source == "field":
                raw = [r.get(ref["field"]) if isinstance(r, dict) else None for r in records]
                values = [_number(v) for v in raw] if column.kind == "numeric" or ref.get("numericValues") else raw
            elif source == "textChars":
                values = [text_chars(r) for r in records]
            else:
                if images is None:
                    images = [image_stats(r.get("image")) if isinstance(r, dict) else None for r in records]
                at = 0 if source == "imageMeanIntensity" else 1
                values = [None if s is None else s[at] for s in images]
            if column.kind == "numeric":
                column.add_numeric(ref, values)
            else:
                column.add_categories([_category_value(v) for v in values])
        pred_ref = profile.get("prediction")
        if self.prediction is not None and pred_ref is not None:
            produced = [o for o in outputs if isinstance(o, dict)]
            got = [o.get(pred_ref["field"]) for o in produced]
            if self.prediction.kind == "numeric":
                self.prediction.add_numeric(pred_ref, [_number(v) for v in got])
            elif self.prediction.kind == "embedding":
                self.prediction.add_embeddings(pred_ref, got)
            else:
                self.prediction.add_categories([_category_value(v) for v in got])

    def _numeric_matrix(self, profile: dict[str, Any], records: list[Any]) -> dict[int, np.ndarray] | None:
        """Every plain numeric field of every record in one numpy conversion (the tabular fast path), by feature
        index; None when a record lacks one or holds a non-number (then each value is looked at on its own)."""
        if self._numeric_fields is None:
            self._numeric_fields = [
                (i, str(ref["field"]))
                for i, ref in enumerate(profile["features"])
                if ref["kind"] == "numeric" and ref.get("source", "field") == "field"
            ]
        if not self._numeric_fields or not records:
            return None
        names = [name for _, name in self._numeric_fields]
        getter = operator.itemgetter(*names)
        try:
            rows = [getter(r) for r in records]
            matrix = np.array(rows, dtype=np.float64).reshape(len(records), len(names))
        except (KeyError, TypeError, ValueError):  # a missing field, a string, a list: the careful path
            return None
        return {i: matrix[:, k] for k, (i, _) in enumerate(self._numeric_fields)}

    @classmethod
    def merge(cls, sketches: Iterable[DriftSketch]) -> DriftSketch:
        """One sketch with the counts of all (same profile); the result equals one sketch over all the rows."""
        items = list(sketches)
        if not items:
            raise ValueError("nothing to merge")
        first = items[0]
        merged = cls.from_doc(first.to_doc())
        merged._profile = first._profile
        for other in items[1:]:
            if other.profile_id != merged.profile_id:
                raise ValueError("sketches of different profiles cannot merge")
            if len(other.features) != len(merged.features):
                raise ValueError("sketches with different features")
            for mine, theirs in zip(merged.features, other.features, strict=True):
                mine.merge_in(theirs)
            if merged.prediction is not None and other.prediction is not None:
                merged.prediction.merge_in(other.prediction)
            merged.records += other.records
            merged.failed += other.failed
        return merged

    def to_doc(self) -> dict[str, Any]:
        """A JSON-ready document, bounded by bins x features (never by rows)."""
        return {
            "v": 1,
            "profileId": self.profile_id,
            "records": self.records,
            "failed": self.failed,
            "features": [c.to_doc() for c in self.features],
            "prediction": self.prediction.to_doc() if self.prediction is not None else None,
            "kinds": [c.kind for c in self.features] + ([self.prediction.kind] if self.prediction else []),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any], profile: dict[str, Any] | None = None) -> DriftSketch:
        """The sketch of `to_doc`; with `profile` it can go on adding rows."""
        kinds = list(doc["kinds"])
        features = [_Column.from_doc(kind, d) for kind, d in zip(kinds, doc["features"], strict=False)]
        prediction = None
        if doc.get("prediction") is not None:
            prediction = _Column.from_doc(kinds[len(features)], doc["prediction"])
        sketch = cls(
            str(doc["profileId"]),
            features,
            prediction,
            records=int(doc.get("records", 0)),
            failed=int(doc.get("failed", 0)),
            profile=profile,
        )
        if profile is not None:
            refs = [*profile["features"], profile.get("prediction")]
            for column, ref in zip([*features, prediction], refs, strict=False):
                if column is not None and ref is not None and column.kind == "categorical":
                    column.known = column.known | frozenset(str(k) for k in ref.get("categories", {}))
        return sketch


def _category_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return None  # a list or object cannot be a category; it counts as missing


# ---------------------------------------------------------------- evaluation


def evaluate(profile: dict[str, Any] | None, sketch: DriftSketch) -> dict[str, Any] | None:
    """The job's drift section (CONTRACT "Drift and rollouts"); None without a profile."""
    if profile is None:
        return None
    if sketch.profile_id != (profile.get("id") or profile_id(profile)):
        raise ValueError("the sketch was made against another profile")
    features = [_evaluate_column(ref, column) for ref, column in zip(profile["features"], sketch.features, strict=True)]
    prediction = None
    pred_ref = profile.get("prediction")
    if pred_ref is not None and sketch.prediction is not None:
        prediction = _evaluate_column(pred_ref, sketch.prediction)
    columns = [f for f in features if f["value"] is not None]
    if prediction is not None and prediction["value"] is not None:
        columns.append(prediction)
    drifted = sum(1 for c in columns if c["drifted"])
    share = drifted / len(columns) if columns else 0.0
    return {
        "status": "drifted" if columns and share >= DATASET_DRIFT_SHARE else "ok",
        "features": features,
        "prediction": prediction,
        "rows": sketch.records,
        "share": round(share, 4),
        "driftedColumns": drifted,
        "columns": len(columns),
        "profileId": sketch.profile_id,
    }


def _evaluate_column(ref: dict[str, Any], column: _Column) -> dict[str, Any]:
    metric = _metric_name(ref, column.rows)
    out: dict[str, Any] = {"name": ref["name"], "metric": metric, "rows": column.rows}
    if column.rows == 0:
        threshold = P_VALUE_THRESHOLD if metric in ("ks", "chi-square", "centroid-shift") else None
        return {**out, "value": None, "threshold": threshold, "drifted": False}
    kind = ref["kind"]
    if kind == "numeric":
        ref_counts = np.asarray(ref["counts"], dtype=np.float64)
        assert column.counts is not None and column.sums is not None
        cur_counts = column.counts.astype(np.float64)
        if metric == "ks":
            statistic = binned_ks(ref_counts, cur_counts)
            p = ks_p_value(statistic, int(ref_counts.sum()), int(cur_counts.sum()))
            return {
                **out,
                "value": _round(p),
                "threshold": P_VALUE_THRESHOLD,
                "drifted": p < P_VALUE_THRESHOLD,
                "statistic": _round(statistic),
            }
        edges = np.asarray(ref["edges"], dtype=np.float64)
        fallback = _bin_centres(edges, float(ref["min"]), float(ref["max"]))
        ref_points = _bin_points(ref_counts, np.asarray(ref["sums"], dtype=np.float64), fallback)
        cur_points = _bin_points(cur_counts, column.sums, fallback)
        distance = weighted_wasserstein(ref_points, ref_counts, cur_points, cur_counts)
        std = float(ref["std"])
        # > 5 distinct reference values (else the column is categorical), so std > 0; guarded all the same.
        value = distance / std if std > 0 else float(distance > 0)
        return {
            **out,
            "value": _round(value),
            "threshold": WASSERSTEIN_THRESHOLD,
            "drifted": value > WASSERSTEIN_THRESHOLD,
        }
    if kind == "categorical":
        keys = list(ref["categories"]) + [k for k in column.categories if k not in ref["categories"]]
        ref_counts = np.asarray([ref["categories"].get(k, 0) for k in keys], dtype=np.float64)
        cur_counts = np.asarray([column.categories.get(k, 0) for k in keys], dtype=np.float64)
        if metric == "chi-square":
            statistic, p = chi2_homogeneity(ref_counts, cur_counts)
            return {
                **out,
                "value": _round(p),
                "threshold": P_VALUE_THRESHOLD,
                "drifted": p < P_VALUE_THRESHOLD,
                "statistic": _round(statistic),
            }
        value = jensen_shannon(ref_counts, cur_counts)
        return {
            **out,
            "value": _round(value),
            "threshold": JENSEN_SHANNON_THRESHOLD,
            "drifted": value > JENSEN_SHANNON_THRESHOLD,
        }
    return {**out, **_evaluate_embedding(ref, column, metric)}


def _evaluate_embedding(ref: dict[str, Any], column: _Column, metric: str) -> dict[str, Any]:
    assert column.vector_sum is not None
    n, m = column.rows, int(ref["rows"])
    centroid_ref = np.asarray(ref["centroid"], dtype=np.float64)
    centroid = column.vector_sum / n
    shift = float(np.linalg.norm(centroid - centroid_ref))
    trace_ref = float(ref["meanSquaredDistance"])
    spread_ref = math.sqrt(trace_ref) if trace_ref > 0 else 0.0
    job_trace = max(0.0, column.sum_sq_norm / n - float(centroid @ centroid))
    extra = {
        "centroidDistance": _round(shift),
        "centroidShift": _round(shift / spread_ref) if spread_ref > 0 else None,
        "spreadRatio": _round(math.sqrt(job_trace) / spread_ref) if spread_ref > 0 else None,
        "meanDistanceRatio": _round(column.sum_ref_distance / n / float(ref["meanDistance"]))
        if float(ref["meanDistance"]) > 0
        else None,
    }
    if metric == "centroid-shift":
        d = float(ref["effectiveDimensions"])
        expected = trace_ref * (1.0 / n + 1.0 / m)
        statistic = shift * shift / expected if expected > 0 else 0.0
        p = chi2_sf(statistic * d, d)
        return {"value": _round(p), "threshold": P_VALUE_THRESHOLD, "drifted": p < P_VALUE_THRESHOLD, **extra}
    return {
        "value": _round(shift),
        "threshold": EMBEDDING_DISTANCE_THRESHOLD,
        "drifted": shift > EMBEDDING_DISTANCE_THRESHOLD,
        **extra,
    }


def _bin_centres(edges: np.ndarray, low: float, high: float) -> np.ndarray:
    bounds = np.concatenate([[min(low, edges[0])], edges, [max(high, edges[-1])]])
    return np.asarray((bounds[:-1] + bounds[1:]) / 2, dtype=np.float64)


def _round(value: float) -> float:
    if math.isinf(value) or math.isnan(value):
        return value
    return float(f"{value:.6g}")
