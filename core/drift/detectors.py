"""The other univariate detectors of issue 3, on both engines: Cramér-von Mises, Fisher's exact
test and the model-uncertainty test on the production model's own probabilities.

Each function returns ``(statistic, p_value)`` for one column. The ``alibi`` engine calls Alibi
Detect's ``CVMDrift``, ``FETDrift`` and ``ClassifierUncertaintyDrift`` (none of them needs
TensorFlow or PyTorch: the uncertainty detector runs with ``backend=None`` and a plain callable);
the ``scipy`` engine computes the same thing directly, so the two agree to float32 precision.
Nothing here knows about frames or reports; :mod:`keel.core.drift.detect` assembles those.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from keel.core.drift import stats as ds

FET_ALTERNATIVE = "two-sided"  # Alibi Detect's FETDrift defaults to "greater" (a rise only)


def cvm_test(ref: np.ndarray, cur: np.ndarray, engine: str) -> tuple[float, float]:
    """Two-sample Cramér-von Mises test of two non-empty, NaN-free samples.

    Alibi Detect's ``CVMDrift`` calls ``scipy.stats.cramervonmises_2samp(method="auto")`` per
    feature (exact p-value up to 20 rows a side, asymptotic beyond) and stores float32; the scipy
    engine makes the same call in float64.
    """
    if engine == "alibi":
        from alibi_detect.cd import CVMDrift

        detector = CVMDrift(ref.reshape(-1, 1), p_val=0.05)
        data = detector.predict(cur.reshape(-1, 1), return_p_val=True, return_distance=True)["data"]
        return float(data["distance"][0]), float(data["p_val"][0])
    result = stats.cramervonmises_2samp(ref, cur, method="auto")
    return float(result.statistic), float(np.clip(result.pvalue, 0.0, 1.0))


def fet_test(ref_counts: np.ndarray, cur_counts: np.ndarray, engine: str) -> tuple[float, float]:
    """Fisher's exact test of a binary feature, from its counts ``[n(first), n(second)]`` per side.

    The second category (in the sorted reference mapping) is coded 1. Alibi Detect's ``FETDrift``
    builds the table ``[[cur_1, ref_1], [cur_0, ref_0]]`` and calls ``scipy.stats.fisher_exact``;
    keel asks for the two-sided alternative (the detector defaults to "greater", which would miss a
    fall). The statistic is the odds ratio: odds of the second category now over the reference's.
    """
    ref0, ref1 = (int(c) for c in ref_counts[:2])
    cur0, cur1 = (int(c) for c in cur_counts[:2])
    if engine == "alibi":
        from alibi_detect.cd import FETDrift

        detector = FETDrift(np.repeat([0, 1], [ref0, ref1]).reshape(-1, 1), p_val=0.05,
                            alternative=FET_ALTERNATIVE)
        x = np.repeat([0, 1], [cur0, cur1]).reshape(-1, 1)
        data = detector.predict(x, return_p_val=True, return_distance=True)["data"]
        return float(data["distance"][0]), float(data["p_val"][0])
    odds, p = stats.fisher_exact([[cur1, ref1], [cur0, ref0]], alternative=FET_ALTERNATIVE)
    return float(odds), float(p)


def two_class_probs(p: np.ndarray) -> np.ndarray:
    """``[1 - p, p]`` per row: the class probabilities of a binary model scoring P(positive)."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    return np.column_stack([1.0 - p, p])


def entropy_uncertainty(p: np.ndarray) -> np.ndarray:
    """The model's uncertainty on each row: entropy (nats) of ``[1 - p, p]``, as Alibi Detect's
    ``classifier_uncertainty(uncertainty_type="entropy")`` computes it (``scipy.stats.entropy``)."""
    return stats.entropy(two_class_probs(p), axis=-1)


def uncertainty_test(ref_p: np.ndarray, cur_p: np.ndarray, engine: str) -> tuple[float, float]:
    """KS test on the entropy of the model's probabilities (Alibi Detect's
    ``ClassifierUncertaintyDrift`` with ``uncertainty_type="entropy"``).

    Both inputs are the model's P(positive) per row, NaN-free and non-empty. The detector takes a
    ``model`` callable; with ``backend=None`` it calls it directly, so the callable here simply turns
    the already computed probabilities into two class columns: nothing is re-scored.
    """
    if engine == "alibi":
        from alibi_detect.cd import ClassifierUncertaintyDrift

        detector = ClassifierUncertaintyDrift(
            np.asarray(ref_p, dtype=np.float64).reshape(-1, 1), model=two_class_probs,
            backend=None, preds_type="probs", uncertainty_type="entropy", p_val=0.05)
        x = np.asarray(cur_p, dtype=np.float64).reshape(-1, 1)
        data = detector.predict(x, return_p_val=True, return_distance=True)["data"]
        return float(data["distance"][0]), float(data["p_val"][0])
    ref_u, cur_u = np.sort(entropy_uncertainty(ref_p)), np.sort(entropy_uncertainty(cur_p))
    d, _ = ds.ks_wasserstein(ref_u, cur_u)
    return d, ds.ks_p_value(d, ref_u.size, cur_u.size)
