"""Classification metrics, confusion-matrix drift and the paired candidate-vs-production comparison.

Significance tests (DeLong, McNemar, paired bootstrap, Holm) are written on numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from keel.core.config import METRICS
from keel.core.errors import ConfigError, DataError
from keel.core.jsonsafe import json_safe

HIGHER_IS_BETTER = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "brier": False,
}
DEFAULT_COMPARED = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss")
_EPS = 1e-15
_BOOT_CELLS = 4_000_000  # resample-matrix cells per chunk: bounds memory on large holdouts


def _as_labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise DataError("labels must be a non-empty 1-D array")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 or 1")
    return y.astype(np.int64)


def _as_proba(proba: Any, n: int) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != (n,):
        raise DataError(f"expected {n} probabilities, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise DataError("probabilities must be finite")
    return p


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def _auc_from_ranks(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney ROC AUC with midranks for ties; None when a class is absent."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(scores)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC AUC, log loss, Brier and the confusion matrix."""
    y = _as_labels(y_true)
    p = _as_proba(proba, y.size)
    if p.min() < 0.0 or p.max() > 1.0:  # a margin or a score: log loss and Brier would be meaningless (or NaN)
        raise DataError(f"probabilities must be between 0 and 1, not {p.min():g} to {p.max():g}")
    pred = p >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))
    pc = np.clip(p, _EPS, 1 - _EPS)
    return {
        "accuracy": (tp + tn) / y.size,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": _auc_from_ranks(y, p),
        "log_loss": float(-np.mean(np.where(pos, np.log(pc), np.log1p(-pc)))),
        "brier": float(np.mean((p - y) ** 2)),
        "confusion": [[tn, fp], [fn, tp]],
        "n": int(y.size),
        "positives": int(pos.sum()),
    }


def confusion_drift(reference: list[list[int]], current: list[list[int]]) -> dict:
    """Chi-square test that the current confusion cells (tn, fp, fn, tp) differ from reference."""
    try:
        ref = np.asarray(reference, dtype=np.float64).reshape(-1)
        cur = np.asarray(current, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"confusion matrices must be 2x2 lists of counts: {exc}") from exc
    if ref.size != 4 or cur.size != 4 or (ref < 0).any() or (cur < 0).any():
        raise DataError("confusion matrices must be 2x2 with non-negative counts")
    if ref.sum() == 0 or cur.sum() == 0:
        raise DataError("confusion matrices must not be empty")
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]  # a cell empty in both carries no information
    if table.shape[1] < 2:
        statistic, p_value, dof = 0.0, 1.0, 0
    else:
        res = stats.chi2_contingency(table, correction=False)
        statistic, p_value, dof = float(res.statistic), float(res.pvalue), int(res.dof)
    total = table.sum()
    cramers_v = math.sqrt(statistic / total) if total > 0 else 0.0  # min(rows, cols) - 1 == 1
    return {
        "statistic": statistic,
        "p_value": p_value,
        "dof": dof,
        "cramers_v": cramers_v,
        "drifted_at_0.05": bool(p_value < 0.05),
        "reference_shares": (ref / ref.sum()).round(6).tolist(),
        "current_shares": (cur / cur.sum()).round(6).tolist(),
    }


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong structural components V10 (per positive) and V01 (per negative), via midranks."""
    m, n = pos.size, neg.size
    tz = stats.rankdata(np.concatenate([pos, neg]))
    v10 = (tz[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (tz[m:] - stats.rankdata(neg)) / m
    return v10, v01


def delong_test(y_true: Any, proba_a: Any, proba_b: Any, alpha: float = 0.05) -> dict:
    """DeLong's test for the difference of two paired ROC AUCs (a - b), with a (1 - alpha) CI."""
    y = _as_labels(y_true)
    a, b = _as_proba(proba_a, y.size), _as_proba(proba_b, y.size)
    keys = ("auc_a", "auc_b", "delta", "se", "z", "p_value", "ci_low", "ci_high")
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        return {**dict.fromkeys(keys), "alpha": alpha, "n_pos": m, "n_neg": n}
    va10, va01 = _placements(a[pos], a[neg])
    vb10, vb01 = _placements(b[pos], b[neg])
    s10 = np.cov(np.vstack([va10, vb10])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([va01, vb01])) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    auc_a, auc_b = float(va10.mean()), float(vb10.mean())
    delta = auc_a - auc_b
    se = math.sqrt(var)
    half = stats.norm.ppf(1 - alpha / 2) * se
    z = delta / se if se > 0 else None
    if z is not None:
        p_value = float(2 * stats.norm.sf(abs(z)))
    else:  # degenerate placements (e.g. identical rankings): no sampling spread to test against
        p_value = 1.0 if delta == 0 else 0.0
    values = (auc_a, auc_b, delta, se, z, p_value, delta - half, delta + half)
    return {**dict(zip(keys, values, strict=True)), "alpha": alpha, "n_pos": m, "n_neg": n}


def mcnemar_test(y_true: Any, pred_a: Any, pred_b: Any) -> dict:
    """McNemar's test on paired predictions: b = only A right, c = only B right.

    Exact binomial when b + c < 25, else chi-square with continuity correction.
    """
    y = _as_labels(y_true)
    ok_a = np.asarray(pred_a).astype(np.int64) == y
    ok_b = np.asarray(pred_b).astype(np.int64) == y
    if ok_a.shape != y.shape or ok_b.shape != y.shape:
        raise DataError("predictions and labels must have the same length")
    b = int(np.sum(ok_a & ~ok_b))
    c = int(np.sum(~ok_a & ok_b))
    k = b + c
    if k == 0:
        return {"b": 0, "c": 0, "statistic": None, "p_value": 1.0, "method": "exact"}
    if k < 25:
        p_value = min(1.0, 2 * float(stats.binom.cdf(min(b, c), k, 0.5)))
        return {"b": b, "c": c, "statistic": None, "p_value": p_value, "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / k
    p_value = float(stats.chi2.sf(statistic, 1))
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": p_value, "method": "chi2"}


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values; None entries are skipped and stay None."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    order = sorted(idx, key=lambda i: p_values[i])  # type: ignore[arg-type, return-value]
    out: list[float | None] = [None] * len(p_values)
    running, m = 0.0, len(order)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


# --- paired bootstrap over resample-count weights -------------------------------------------------


def _weighted_auc(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC per resample row of weights w (B x n); tied scores count one half."""
    return _RowTerms(y, p, 0.5, ("roc_auc",)).auc(w)


class _RowTerms:
    """One model's per-row terms of the bootstrapped metrics, computed once for all resamples: a resample's
    metric is then a weighted sum of them (w @ term), so each resample costs one pass per term over its weights."""

    def __init__(self, y: np.ndarray, p: np.ndarray, threshold: float, metrics: Sequence[str]) -> None:
        self.n = y.size
        pred = (p >= threshold).astype(np.float64)
        yf = y.astype(np.float64)
        self.terms: dict[str, np.ndarray] = {}
        if "accuracy" in metrics:
            self.terms["correct"] = (pred == yf).astype(np.float64)
        if {"precision", "recall", "f1"} & set(metrics):
            self.terms |= {"tp": pred * yf, "fp": pred * (1 - yf), "fn": (1 - pred) * yf}
        if "log_loss" in metrics:
            pc = np.clip(p, _EPS, 1 - _EPS)
            self.terms["log_loss"] = -np.where(y == 1, np.log(pc), np.log1p(-pc))
        if "brier" in metrics:
            self.terms["brier"] = (p - yf) ** 2
        if "roc_auc" in metrics:
            self.order = np.argsort(p, kind="stable")
            ps, self.ys = p[self.order], y[self.order]
            self.starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # first row of each tie group

    def values(self, w: np.ndarray, metrics: Sequence[str]) -> dict[str, np.ndarray]:
        """Each metric on every resample; w holds how often each row was drawn (B x n)."""
        sums: dict[str, np.ndarray] = {}

        def total(term: str) -> np.ndarray:
            if term not in sums:
                sums[term] = w @ self.terms[term]
            return sums[term]

        out = {}
        for metric in metrics:
            if metric == "accuracy":
                out[metric] = total("correct") / self.n
            elif metric in ("precision", "recall", "f1"):
                tp, fp, fn = total("tp"), total("fp"), total("fn")
                num = tp if metric != "f1" else 2 * tp
                den = {"precision": tp + fp, "recall": tp + fn, "f1": 2 * tp + fp + fn}[metric]
                out[metric] = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            elif metric in ("log_loss", "brier"):
                out[metric] = total(metric) / self.n
            else:
                out[metric] = self.auc(w)
        return out

    def auc(self, w: np.ndarray) -> np.ndarray:
        ws, ys = w[:, self.order], self.ys
        pos_w = np.add.reduceat(ws * ys, self.starts, axis=1)
        neg_w = np.add.reduceat(ws * (1 - ys), self.starts, axis=1)
        below = np.cumsum(neg_w, axis=1) - neg_w
        num = np.sum(pos_w * (below + 0.5 * neg_w), axis=1)
        den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)


def _resample_weights(rng: np.random.Generator, n_boot: int, n: int) -> Any:
    """Yield chunks of bootstrap count matrices (rows = resamples, columns = original rows)."""
    chunk = max(1, _BOOT_CELLS // n)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def paired_bootstrap(
    y_true: Any,
    proba_a: Any,
    proba_b: Any,
    metrics: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Per-metric bootstrap improvement of a over b (higher is better), same resamples for both."""
    y = _as_labels(y_true)
    a, b = _as_proba(proba_a, y.size), _as_proba(proba_b, y.size)
    rng = np.random.default_rng(seed)
    terms_a, terms_b = _RowTerms(y, a, threshold, metrics), _RowTerms(y, b, threshold, metrics)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for w in _resample_weights(rng, n_boot, y.size):
        values_a, values_b = terms_a.values(w, metrics), terms_b.values(w, metrics)
        for m in metrics:
            d = values_a[m] - values_b[m]
            parts[m].append(d if HIGHER_IS_BETTER[m] else -d)
    return {m: np.concatenate(v) if v else np.empty(0) for m, v in parts.items()}


def _boot_summary(imp: np.ndarray, alpha: float) -> tuple[float | None, float | None, float | None]:
    """Percentile CI and two-sided bootstrap p-value (share of resamples across zero)."""
    imp = imp[np.isfinite(imp)]
    if imp.size == 0:
        return None, None, None
    lo, hi = (float(q) for q in np.percentile(imp, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    below, above = int(np.sum(imp <= 0)), int(np.sum(imp >= 0))
    share = (min(below, above) + 1) / (imp.size + 1)
    return lo, hi, min(1.0, 2 * share)


# --- comparison -----------------------------------------------------------------------------------


@dataclass
class MetricComparison:
    """One metric, candidate vs production; improvement = delta, negated when lower is better."""

    metric: str
    candidate: float | None
    production: float | None
    delta: float | None
    improvement: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    test: str

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]


@dataclass
class Comparison:
    """A paired candidate-vs-production evaluation on the same holdout rows."""

    metrics: dict[str, MetricComparison]
    churn: float
    n: int
    alpha: float
    n_boot: int
    seed: int
    candidate_metrics: dict
    production_metrics: dict

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


def _improvement(metric: str, delta: float | None) -> float | None:
    if delta is None:
        return None
    return delta if HIGHER_IS_BETTER[metric] else -delta


def _auc_comparison(y: np.ndarray, c: np.ndarray, p: np.ndarray, alpha: float) -> MetricComparison:
    r = delong_test(y, c, p, alpha=alpha)
    return MetricComparison(
        metric="roc_auc", candidate=r["auc_a"], production=r["auc_b"], delta=r["delta"],
        improvement=r["delta"], ci_low=r["ci_low"], ci_high=r["ci_high"],
        p_value=r["p_value"], p_adjusted=None, test="delong",
    )  # fmt: skip


def compare_models(
    y_true: Any,
    proba_candidate: Any,
    proba_production: Any,
    *,
    metrics: Sequence[str] = DEFAULT_COMPARED,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
) -> Comparison:
    """Compare candidate and production on the same rows: deltas, CIs, Holm-adjusted p, churn.

    ROC AUC uses DeLong; accuracy uses McNemar for its p-value and the paired bootstrap for its CI;
    every other metric uses the paired bootstrap. n_boot=0 skips the bootstrap (CIs left None).
    """
    unknown = [m for m in metrics if m not in HIGHER_IS_BETTER]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    y = _as_labels(y_true)
    c, p = _as_proba(proba_candidate, y.size), _as_proba(proba_production, y.size)
    cand_m, prod_m = (
        classification_metrics(y, c, threshold),
        classification_metrics(y, p, threshold),
    )
    boot_names = [m for m in metrics if m != "roc_auc"] if n_boot > 0 else []
    boot = paired_bootstrap(y, c, p, boot_names, n_boot=n_boot, seed=seed, threshold=threshold)
    out: dict[str, MetricComparison] = {}
    for m in metrics:
        if m == "roc_auc":
            out[m] = _auc_comparison(y, c, p, alpha)
            continue
        delta = cand_m[m] - prod_m[m]
        lo, hi, p_boot = _boot_summary(boot[m], alpha) if m in boot else (None, None, None)
        test, p_value = "bootstrap", p_boot
        if m == "accuracy":
            test, p_value = "mcnemar", mcnemar_test(y, c >= threshold, p >= threshold)["p_value"]
        out[m] = MetricComparison(
            metric=m, candidate=cand_m[m], production=prod_m[m], delta=delta,
            improvement=_improvement(m, delta), ci_low=lo, ci_high=hi,
            p_value=p_value, p_adjusted=None, test=test,
        )  # fmt: skip
    for mc, adj in zip(out.values(), holm([mc.p_value for mc in out.values()]), strict=True):
        mc.p_adjusted = adj
    churn = float(np.mean((c >= threshold) != (p >= threshold)))
    return Comparison(out, churn, int(y.size), alpha, n_boot, seed, cand_m, prod_m)
