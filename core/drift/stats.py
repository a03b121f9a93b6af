"""Pure statistics behind keel's drift checks: KS, chi-square, effect sizes and corrections.

Everything here works on numpy arrays and counts; nothing knows about frames, engines or reports.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

PSI_EPSILON = 1e-4
PSI_BINS = 10


def ks_wasserstein(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic (two-sided) and Wasserstein-1 distance, sharing one pass.

    Both inputs must be sorted, non-empty and free of NaN. The statistic is that of
    ``scipy.stats.ks_2samp`` and the distance that of ``scipy.stats.wasserstein_distance`` (the
    tests check both to 1e-12); pair it with :func:`ks_p_value`. Both empirical CDFs are evaluated
    once, at the distinct values only, so the pair costs less than one ``ks_2samp`` call.
    """
    merged = np.sort(np.concatenate([ref_sorted, cur_sorted]), kind="stable")  # merges two runs
    distinct = merged[np.append(merged[1:] != merged[:-1], True)]
    diffs = (np.searchsorted(ref_sorted, distinct, side="right") / ref_sorted.shape[0]
             - np.searchsorted(cur_sorted, distinct, side="right") / cur_sorted.shape[0])
    d_plus = float(diffs.max())
    d_minus = float(np.clip(-diffs.min(), 0.0, 1.0))
    w1 = float(np.dot(np.abs(diffs[:-1]), np.diff(distinct)))
    return (d_minus if d_minus > d_plus else d_plus), w1


def ks_p_value(d: float, n1: int, n2: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as ``ks_2samp(method="asymp")`` computes it."""
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def chi2_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity on a 2 x k table of category counts.

    Categories absent from both sides are dropped, as Alibi Detect does by counting only the union
    of categories present in the reference and the current data; ``chi2_contingency`` then applies
    its defaults (Yates' correction when the table has one degree of freedom).
    """
    present = (ref_counts + cur_counts) > 0
    table = np.vstack([ref_counts[present], cur_counts[present]])
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def null_rate_p_value(null_ref: int, n_ref: int, null_cur: int, n_cur: int) -> float:
    """Two-proportion z-test (chi-square without continuity correction) of two null rates."""
    if n_ref == 0 or n_cur == 0:
        return math.nan
    pooled = (null_ref + null_cur) / (n_ref + n_cur)
    if pooled in (0.0, 1.0):
        return 1.0
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    z = (null_ref / n_ref - null_cur / n_cur) / se
    return float(math.erfc(abs(z) / math.sqrt(2.0)))


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index over matching buckets; shares are floored at ``eps``."""
    ref = np.maximum(ref_counts / max(ref_counts.sum(), 1), eps)
    cur = np.maximum(cur_counts / max(cur_counts.sum(), 1), eps)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_psi(ref_sorted: np.ndarray, cur_sorted: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI over fixed reference-quantile bins (deciles by default); tied edges are merged."""
    _, ref_counts, cur_counts = quantile_bins(ref_sorted, cur_sorted, bins)
    return psi(ref_counts, cur_counts)


def quantile_bins(ref_sorted: np.ndarray, cur_sorted: np.ndarray,
                  bins: int = PSI_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inner edges at the reference's quantiles (tied edges merged) and both sides' counts per bin.

    The bins are (-inf, e1], (e1, e2], ..., (ek, inf): the ones PSI compares, and the histogram shows.
    """
    edges = np.unique(sorted_quantiles(ref_sorted, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return edges, _bin_counts(ref_sorted, edges), _bin_counts(cur_sorted, edges)


def sorted_quantiles(values_sorted: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(values, q)`` (linear interpolation) of a sorted, non-empty array, read off by index
    instead of partitioning the whole array again."""
    position = np.asarray(q, dtype=np.float64) * (values_sorted.shape[0] - 1)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, values_sorted.shape[0] - 1)
    below, above = values_sorted[low], values_sorted[high]
    return below + (above - below) * (position - low)


def shares(counts: np.ndarray) -> list[float]:
    """Counts as shares of their total (all zeros for an empty side)."""
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def _bin_counts(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in (-inf, e1], (e1, e2], ..., (ek, inf) of an already sorted array."""
    cumulative = np.searchsorted(values_sorted, edges, side="right")
    return np.diff(np.concatenate([[0], cumulative, [values_sorted.shape[0]]]))


def wasserstein_normalised(w1: float, ref_std: float) -> float:
    """Wasserstein distance in reference standard deviations (a zero std counts as 1)."""
    return w1 / ref_std if ref_std > 0 and math.isfinite(ref_std) else w1


def bonferroni(p_values: np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted p-values, min(1, m p); NaN (untested) entries stay NaN, uncounted."""
    p = np.asarray(p_values, dtype=np.float64)
    tested = ~np.isnan(p)
    return np.where(tested, np.minimum(1.0, p * int(tested.sum())), np.nan)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone); NaN entries stay NaN.

    ``adjusted < q`` holds for exactly the hypotheses BH rejects at level q, so "any adjusted
    p-value below q" agrees with Alibi Detect's batch-level FDR decision.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out
