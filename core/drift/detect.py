"""Input, prediction and label drift against the reference: tests, effect sizes, ranking.

Two engines run the same tests: ``alibi`` (Alibi Detect's TabularDrift, CVMDrift, FETDrift and
ClassifierUncertaintyDrift) and ``scipy``; the last three live in :mod:`keel.core.drift.detectors`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from keel.core.config import DriftConfig
from keel.core.drift import detectors as dd
from keel.core.drift import stats as ds
from keel.core.errors import ConfigError, DataError
from keel.core.jsonsafe import json_safe

ENGINES = ("alibi", "scipy")
CORRECTIONS = ("bonferroni", "fdr")
NUMERIC_EFFECTS = ("wasserstein", "psi")
HISTOGRAM_CATEGORIES = 8  # categorical histograms: the reference's most common categories, then "other"
NUMERIC_TESTS = ("ks", "cvm")
PREDICTION_TESTS = ("uncertainty", "ks")
DEFAULTS = DriftConfig()  # keel.toml's [drift] defaults
_CATEGORICAL_DTYPES = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


@dataclass
class FeatureDrift:
    """Drift of one feature (or of the predictions or labels) against the reference."""

    name: str
    kind: str  # "numeric" | "categorical"
    test: str  # "ks" | "cvm" | "chi2" | "fet" | "uncertainty_ks" (see drift_detectors)
    statistic: float  # NaN when a side has no non-null value (untestable)
    p_value: float
    p_corrected: float
    effect_size: float
    effect_metric: str  # "wasserstein_norm" | "psi"
    drifted: bool  # p_corrected < settings.p_value and effect_size >= its threshold
    importance: float | None
    importance_rank: int | None  # 1 = most important; None when the model gave no importance
    null_rate_reference: float
    null_rate_current: float
    null_p_value: float  # two-proportion z-test of the null rates; not part of `drifted`
    unseen: int  # current rows whose category is not in the reference mapping
    # reference against current, for a picture: numeric {"edges", "reference", "current"} (shares
    # over the PSI bins, the reference's deciles); categorical {"labels", ...}: top 8 and "other"
    histogram: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: plain Python types, NaN and infinities become None."""
        return {key: json_safe(value) for key, value in asdict(self).items()}


@dataclass
class DriftReport:
    """Drift of one batch: every feature tested, corrected together, ranked."""

    engine: str
    correction: str
    detected: bool
    features: list[FeatureDrift]  # drifted first, then importance rank, then p-value
    n_reference: int  # rows compared per side (after sampling)
    n_current: int
    sampled: str | None  # e.g. "sampled 100000 of 2500000 current rows, seed 0"

    def drifted(self) -> list[str]:
        """Names of the drifted features, most important first."""
        return [f.name for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the whole report."""
        out = {key: json_safe(getattr(self, key)) for key in (
            "engine", "correction", "detected", "n_reference", "n_current", "sampled")}
        out["features"] = [f.to_dict() for f in self.features]
        return out


# --- per-feature inputs -------------------------------------------------------------------------


@dataclass
class _Numeric:
    ref: np.ndarray  # sorted non-null, non-NaN values
    cur: np.ndarray
    null_ref: int
    null_cur: int


@dataclass
class _Categorical:
    ref_counts: np.ndarray  # counts per reference category, last entry = unseen bucket
    cur_counts: np.ndarray
    null_ref: int
    null_cur: int
    categories: list[str]
    ref: pl.Series  # non-null values as strings, kept for the alibi engine
    cur: pl.Series


def category_mapping(reference: pl.DataFrame, categorical: list[str]) -> dict[str, list[str]]:
    """Fixed, sorted category list per column, as strings; store it with the reference.

    Category i gets code i; every value outside the list (in later batches) shares one "unseen"
    code, len(list). Nulls are not a category: they are excluded and tested as a null rate.
    """
    _require_columns(reference, categorical, "reference")
    return {
        name: sorted(reference.get_column(name).cast(pl.String).drop_nulls().unique().to_list())
        for name in categorical
    }


def _numeric_input(ref: pl.Series, cur: pl.Series) -> _Numeric:
    (ref_values, null_ref), (cur_values, null_cur) = _numeric_values(ref), _numeric_values(cur)
    return _Numeric(ref_values, cur_values, null_ref, null_cur)


def _numeric_values(series: pl.Series) -> tuple[np.ndarray, int]:
    """Sorted float64 values without nulls or NaN (NaN counts as null), and the null count."""
    if series.dtype.is_float():
        series = series.fill_nan(None)
    elif series.dtype.is_temporal():
        series = series.to_physical()
    values = series.drop_nulls().cast(pl.Float64).sort().to_numpy()  # polars sorts ~7x faster
    return values, series.null_count()


def _categorical_input(ref: pl.Series, cur: pl.Series, categories: list[str]) -> _Categorical:
    ref_str, cur_str = ref.cast(pl.String), cur.cast(pl.String)
    return _Categorical(
        _category_counts(ref_str, categories), _category_counts(cur_str, categories),
        ref_str.null_count(), cur_str.null_count(), categories,
        ref_str.drop_nulls(), cur_str.drop_nulls(),
    )


def _category_counts(values: pl.Series, categories: list[str]) -> np.ndarray:
    """Counts per category code (one hash group-by, no per-row mapping); last = unseen."""
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 1, dtype=np.int64)
    table = values.alias("value").drop_nulls().value_counts(sort=False)
    for value, count in zip(table["value"].to_list(), table["count"].to_list(), strict=True):
        counts[index.get(value, len(categories))] += count
    return counts


# --- tests and effects ---------------------------------------------------------------------------


def _alibi_test(
    ref: np.ndarray, cur: np.ndarray, categories: list[int] | None, settings: DriftConfig
) -> tuple[float, float]:
    """Statistic and p-value of one column from Alibi Detect's TabularDrift.

    One detector per column, because nulls are dropped per column and a TabularDrift matrix
    needs the same rows for every column; the correction across columns is applied afterwards.
    """
    from alibi_detect.cd.tabular import TabularDrift  # ~1.7 s import: only when asked for

    detector = TabularDrift(
        ref.reshape(-1, 1), p_val=settings.p_value, correction=settings.correction,
        categories_per_feature={} if categories is None else {0: categories},
    )
    data = detector.predict(cur.reshape(-1, 1), return_p_val=True, return_distance=True)["data"]
    return float(data["distance"][0]), float(data["p_val"][0])


def _numeric_drift(name: str, f: _Numeric, settings: DriftConfig) -> FeatureDrift:
    if f.ref.size == 0 or f.cur.size == 0:
        stat = p = effect = math.nan
    else:
        stat, w1 = ds.ks_wasserstein(f.ref, f.cur)
        if settings.numeric_test == "cvm":
            stat, p = dd.cvm_test(f.ref, f.cur, settings.engine)
        elif settings.engine == "alibi":
            stat, p = _alibi_test(f.ref, f.cur, None, settings)
        else:
            p = ds.ks_p_value(stat, f.ref.size, f.cur.size)
        effect = _numeric_effect(f.ref, f.cur, w1, settings)
    metric = "psi" if settings.numeric_effect == "psi" else "wasserstein_norm"
    n_ref, n_cur = f.ref.size + f.null_ref, f.cur.size + f.null_cur
    result = _feature(name, "numeric", settings.numeric_test, stat, p, effect, metric,
                      (f.null_ref, n_ref, f.null_cur, n_cur), 0)
    result.histogram = _numeric_histogram(f)
    return result


def _numeric_histogram(f: _Numeric) -> dict[str, Any] | None:
    """Shares per reference-quantile bin (the PSI bins) on both sides; None when a side is empty."""
    if f.ref.size == 0 or f.cur.size == 0:
        return None
    edges, ref_counts, cur_counts = ds.quantile_bins(f.ref, f.cur)
    return {"edges": [float(e) for e in edges], "reference": ds.shares(ref_counts),
            "current": ds.shares(cur_counts)}


def _numeric_effect(ref: np.ndarray, cur: np.ndarray, w1: float, settings: DriftConfig) -> float:
    if settings.numeric_effect == "psi":
        return ds.numeric_psi(ref, cur)
    return ds.wasserstein_normalised(w1, float(ref.std()))


def _uncertainty_drift(f: _Numeric, settings: DriftConfig) -> FeatureDrift:
    """Prediction drift as Alibi Detect's ClassifierUncertaintyDrift: KS on the entropy of
    [1 - p, p]; the effect size is measured on those entropies too."""
    if f.ref.size == 0 or f.cur.size == 0:
        stat = p = effect = math.nan
    else:
        stat, p = dd.uncertainty_test(f.ref, f.cur, settings.engine)
        ref_u, cur_u = (np.sort(dd.entropy_uncertainty(v)) for v in (f.ref, f.cur))
        effect = _numeric_effect(ref_u, cur_u, ds.ks_wasserstein(ref_u, cur_u)[1], settings)
    metric = "psi" if settings.numeric_effect == "psi" else "wasserstein_norm"
    n_ref, n_cur = f.ref.size + f.null_ref, f.cur.size + f.null_cur
    return _feature("prediction", "numeric", "uncertainty_ks", stat, p, effect, metric,
                    (f.null_ref, n_ref, f.null_cur, n_cur), 0)


def _categorical_drift(name: str, f: _Categorical, settings: DriftConfig) -> FeatureDrift:
    # binary (two reference categories, none unseen now): Fisher's exact test; else chi-square,
    # which also covers a binary feature that gained a third value (the unseen bucket)
    binary = len(f.categories) == 2 and f.cur_counts[-1] == 0
    if f.ref_counts.sum() == 0 or f.cur_counts.sum() == 0:
        stat = p = effect = math.nan
    else:
        if binary:
            stat, p = dd.fet_test(f.ref_counts, f.cur_counts, settings.engine)
        elif settings.engine == "alibi":
            stat, p = _alibi_test(*_codes(f), settings)
        else:
            stat, p = ds.chi2_counts(f.ref_counts, f.cur_counts)
        effect = ds.psi(f.ref_counts, f.cur_counts)
    n_ref = int(f.ref_counts.sum()) + f.null_ref
    n_cur = int(f.cur_counts.sum()) + f.null_cur
    result = _feature(name, "categorical", "fet" if binary else "chi2", stat, p, effect, "psi",
                      (f.null_ref, n_ref, f.null_cur, n_cur), int(f.cur_counts[-1]))
    result.histogram = _categorical_histogram(f)
    return result


def _categorical_histogram(f: _Categorical, top: int = HISTOGRAM_CATEGORIES) -> dict[str, Any] | None:
    """Shares of the reference's ``top`` most common categories, and of everything else ("other")."""
    if f.ref_counts.sum() == 0 or f.cur_counts.sum() == 0:
        return None
    order = sorted(range(len(f.categories)), key=lambda i: (-int(f.ref_counts[i]), f.categories[i]))[:top]
    labels = [f.categories[i] for i in order]
    ref, cur = [int(f.ref_counts[i]) for i in order], [int(f.cur_counts[i]) for i in order]
    rest_ref, rest_cur = int(f.ref_counts.sum()) - sum(ref), int(f.cur_counts.sum()) - sum(cur)
    if rest_ref or rest_cur:  # the smaller categories and the unseen bucket
        labels.append("other")
        ref.append(rest_ref)
        cur.append(rest_cur)
    return {"labels": labels, "reference": ds.shares(np.array(ref)), "current": ds.shares(np.array(cur))}


def _codes(f: _Categorical) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Integer-coded rows for Alibi Detect, and the codes present in the reference."""
    unseen = len(f.categories)

    def encode(values: pl.Series) -> np.ndarray:
        return values.replace_strict(
            f.categories, list(range(unseen)), default=unseen, return_dtype=pl.Int32
        ).to_numpy().astype(np.float64)

    present = [int(code) for code in np.flatnonzero(f.ref_counts)]
    return encode(f.ref), encode(f.cur), present


def _feature(
    name: str, kind: str, test: str, stat: float, p: float, effect: float, metric: str,
    nulls: tuple[int, int, int, int], unseen: int,
) -> FeatureDrift:
    null_ref, n_ref, null_cur, n_cur = nulls
    return FeatureDrift(
        name=name, kind=kind, test=test, statistic=stat, p_value=p, p_corrected=p,
        effect_size=effect, effect_metric=metric, drifted=False, importance=None,
        importance_rank=None,
        null_rate_reference=null_ref / n_ref if n_ref else math.nan,
        null_rate_current=null_cur / n_cur if n_cur else math.nan,
        null_p_value=ds.null_rate_p_value(null_ref, n_ref, null_cur, n_cur), unseen=unseen,
    )


def _decide(feature: FeatureDrift, settings: DriftConfig) -> None:
    """Drifted = significant after correction AND at least the effect-size floor."""
    floor = settings.psi_threshold if feature.effect_metric == "psi" else (
        settings.wasserstein_threshold)
    feature.drifted = bool(feature.p_corrected < settings.p_value and feature.effect_size >= floor)


# --- the public entry points ----------------------------------------------------------------------


def detect_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: list[str],
    categorical: list[str],
    settings: DriftConfig = DEFAULTS,
    importance: dict[str, float] | None = None,
) -> DriftReport:
    """Test every feature of ``current`` against ``reference`` and rank what drifted.

    Numeric features get a two-sample KS (or, with ``numeric_test = "cvm"``, Cramér-von Mises) test
    on their non-null values; categorical features (those listed, plus any string, categorical or
    boolean column) a chi-square test over the reference categories and one unseen bucket, or
    Fisher's exact test when the reference has exactly two categories and nothing unseen came. p-values are corrected together (Bonferroni or BH); a
    feature drifts only when its corrected p-value is below ``p_value`` and its effect size
    reaches the floor.
    """
    features = list(dict.fromkeys(features))
    _require_columns(reference, features, "reference")
    _require_columns(current, features, "current")
    if reference.height == 0 or current.height == 0:
        raise DataError(f"drift needs rows on both sides: reference has {reference.height}, "
                        f"current has {current.height}")
    listed = set(categorical)
    cats = [n for n in features if n in listed or _looks_categorical(reference, current, n)]
    mapping = category_mapping(reference.select(cats), cats)  # from the full reference
    ref, cur, sampled = _sample_both(reference.select(features), current.select(features), settings)
    results = [
        _categorical_drift(n, _categorical_input(ref[n], cur[n], mapping[n]), settings)
        if n in mapping else _numeric_drift(n, _numeric_input(ref[n], cur[n]), settings)
        for n in features
    ]
    _correct(results, settings)
    _rank(results, importance or {})
    results.sort(key=_report_order)
    return DriftReport(
        engine=settings.engine, correction=settings.correction,
        detected=any(f.drifted for f in results), features=results,
        n_reference=ref.height, n_current=cur.height, sampled=sampled,
    )


def score_drift(
    reference_scores: np.ndarray, current_scores: np.ndarray,
    settings: DriftConfig = DEFAULTS,
) -> FeatureDrift:
    """Prediction drift on the model's 1-D scores (probabilities); NaN scores count as nulls.

    ``prediction_test = "ks"`` (default): KS on the scores themselves (or CVM, with
    ``numeric_test = "cvm"``); ``"uncertainty"``: KS on the entropy of [1 - p, p], as Alibi Detect's
    ClassifierUncertaintyDrift (blind to scores that flip across 0.5, hence not the default).
    """
    ref, cur = (pl.Series("prediction", _one_d(s), dtype=pl.Float64)
                for s in (reference_scores, current_scores))
    if settings.prediction_test == "uncertainty":
        result = _uncertainty_drift(_numeric_input(ref, cur), settings)
    else:
        result = _numeric_drift("prediction", _numeric_input(ref, cur), settings)
    _decide(result, settings)
    return result


def label_drift(
    reference_labels: np.ndarray, current_labels: np.ndarray,
    settings: DriftConfig = DEFAULTS,
) -> FeatureDrift:
    """Label drift: chi-square on class counts (classes as strings; unseen classes bucketed)."""
    ref, cur = (_label_series(s) for s in (reference_labels, current_labels))
    ref, cur = (s.fill_nan(None) if s.dtype.is_float() else s for s in (ref, cur))
    categories = sorted(ref.cast(pl.String).drop_nulls().unique().to_list())
    result = _categorical_drift("label", _categorical_input(ref, cur, categories), settings)
    _decide(result, settings)
    return result


def _label_series(values: np.ndarray) -> pl.Series:
    array = _one_d(values)
    if array.dtype == object:  # e.g. strings with None: let polars infer from Python values
        return pl.Series("label", array.tolist(), strict=False)
    return pl.Series("label", array)


def _one_d(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {array.shape}")
    return array


def _looks_categorical(reference: pl.DataFrame, current: pl.DataFrame, name: str) -> bool:
    dtype = reference.schema[name]
    if dtype == pl.Null:
        dtype = current.schema[name]
    return isinstance(dtype, _CATEGORICAL_DTYPES) or dtype in _CATEGORICAL_DTYPES


def _require_columns(frame: pl.DataFrame, names: list[str], side: str) -> None:
    missing = ", ".join(repr(n) for n in names if n not in frame.columns)
    if missing:
        raise ConfigError(f"drift feature(s) {missing} not in the {side} data")


def _sample_both(
    reference: pl.DataFrame, current: pl.DataFrame, settings: DriftConfig
) -> tuple[pl.DataFrame, pl.DataFrame, str | None]:
    """Sample each side down to ``sample_size`` rows once, with the fixed seed."""
    notes, frames = [], []
    for side, frame in (("reference", reference), ("current", current)):
        if frame.height > settings.sample_size:
            notes.append(f"{settings.sample_size} of {frame.height} {side} rows")
            frame = frame.sample(n=settings.sample_size, seed=settings.seed)
        frames.append(frame)
    sampled = f"sampled {' and '.join(notes)}, seed {settings.seed}" if notes else None
    return frames[0], frames[1], sampled


def _correct(results: list[FeatureDrift], settings: DriftConfig) -> None:
    p = np.array([f.p_value for f in results], dtype=np.float64)
    adjust = ds.bonferroni if settings.correction == "bonferroni" else ds.benjamini_hochberg
    for feature, corrected in zip(results, adjust(p), strict=True):
        feature.p_corrected = float(corrected)
        _decide(feature, settings)


def _rank(results: list[FeatureDrift], importance: dict[str, float]) -> None:
    """Rank 1 = highest gain among the tested features; features without a gain get None."""
    known = {f.name: float(importance[f.name]) for f in results
             if f.name in importance and math.isfinite(float(importance[f.name]))}
    order = sorted(known, key=lambda name: (-known[name], name))
    ranks = {name: i + 1 for i, name in enumerate(order)}
    for feature in results:
        feature.importance = known.get(feature.name)
        feature.importance_rank = ranks.get(feature.name)


def _report_order(f: FeatureDrift) -> tuple[bool, bool, int, float, str]:
    p = f.p_value if math.isfinite(f.p_value) else math.inf
    return (not f.drifted, f.importance_rank is None, f.importance_rank or 0, p, f.name)
