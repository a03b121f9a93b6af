"""Label-free performance estimation (CBPE): expected metrics from calibrated probabilities.

Confidence-based performance estimation (NannyML's CBPE): calibrate the model's scores on labelled
holdout data, then treat each calibrated probability as the chance that the row is positive. The
expected confusion matrix on an unlabelled batch follows, and with it expected accuracy, precision,
recall, F1 and ROC AUC. It assumes P(y | score) is the same as on the holdout, i.e. no concept
drift: a change in how often delays happen at a given score (a label shift the features do not
explain) is invisible to it, and only realised metrics can show that.

The calibration is isotonic regression, Platt scaling, or ("auto", the pipeline's default) whichever
of the two has the lower cross-validated log loss on the calibration rows (:func:`choose_calibration`).

``prior_shift="em"`` first re-weights the calibrated probabilities to the batch's own class prior,
estimated by EM without labels (Saerens, Latinne & Decaestecker, 2002). That is right under pure
label shift (P(score | y) fixed, only P(y) moves). On the demo's months it made the estimate worse
(accuracy MAE 7.7 points against 4.1 without it; tests/core/test_estimate.py measures both): there
the delay rate moves while the scores do not follow it, which is not label shift. Off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from keel.core.errors import DataError

ESTIMATED = ("accuracy", "precision", "recall", "f1", "roc_auc")
PRIOR_SHIFT = ("none", "em")


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw score to P(positive), fitted on labelled holdout data."""

    method: str
    x: tuple[float, ...]  # isotonic: knot scores; platt: (a, b) of sigmoid(a * logit(s) + b)
    y: tuple[float, ...]
    n: int
    positives: int

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            a, b = self.x
            return _sigmoid(a * _logit(s) + b)
        return np.interp(s, np.asarray(self.x), np.asarray(self.y))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": list(self.x), "y": list(self.y), "n": self.n, "positives": self.positives}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(data["method"], tuple(data["x"]), tuple(data["y"]), data["n"], data["positives"])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + e^-z) without overflow


def _check(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise DataError("calibration needs one score per label")
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    if y.size < 20 or y.min() == y.max():
        raise DataError("calibration needs at least 20 labelled holdout rows of both classes")
    return y, s


CALIBRATIONS = ("auto", "isotonic", "platt")
CV_FOLDS = 5


def fit_calibrator(y: np.ndarray, scores: np.ndarray,
                   method: Literal["auto", "isotonic", "platt"] = "isotonic") -> Calibrator:
    """Fit isotonic regression (pool-adjacent-violators) or Platt scaling of scores to labels.

    ``"auto"`` fits whichever of the two :func:`choose_calibration` finds better on these rows.
    """
    y, s = _check(y, scores)
    if method == "auto":
        method = choose_calibration(y, s)
    if method == "platt":
        return _fit_platt(y, s)
    return _fit_isotonic(y, s)


def choose_calibration(y: np.ndarray, scores: np.ndarray, folds: int = CV_FOLDS) -> Literal["isotonic", "platt"]:
    """The calibration ("isotonic" or "platt") with the lower log loss on held-out rows, by ``folds``-fold CV.

    Isotonic regression can follow any monotone distortion of the scores but spends a step on every
    wiggle of the sample; Platt scaling fits two numbers and cannot follow a distortion that is not
    logistic. Which one carries over to unseen rows is an empirical question, asked of the
    calibration rows alone (never the batch estimated). Folds are dealt round-robin in score order,
    so the choice does not depend on the order the rows came in.
    """
    y, s = _check(y, scores)
    order = np.lexsort((y, s))
    fold = np.empty(s.size, dtype=np.int64)
    fold[order] = np.arange(s.size) % folds
    loss = {"isotonic": 0.0, "platt": 0.0}
    for k in range(folds):
        fit, held = fold != k, fold == k
        if y[fit].min() == y[fit].max():
            return "isotonic"  # too few positives to cross-validate: keep the assumption-free fit
        y_fit, y_held = y[fit], y[held]
        for name, fitter in (("isotonic", _fit_isotonic), ("platt", _fit_platt)):
            p = np.clip(fitter(y_fit, s[fit])(s[held]), 1e-6, 1 - 1e-6)
            loss[name] -= float(np.sum(y_held * np.log(p) + (1 - y_held) * np.log(1 - p)))
    return "platt" if loss["platt"] < loss["isotonic"] else "isotonic"


def _fit_isotonic(y: np.ndarray, s: np.ndarray) -> Calibrator:
    from scipy.optimize import isotonic_regression

    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # equal scores share one target: average them first so the fit is a function of the score
    knots, start = np.unique(s_sorted, return_index=True)
    counts = np.diff(np.append(start, s_sorted.size))
    means = np.add.reduceat(y_sorted, start) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
    # the fit is a staircase; a step's rows would all look alike and the expected AUC would come out
    # low, so interpolate linearly between the steps' centres (weighted mean score of each step)
    steps = np.flatnonzero(np.r_[True, fitted[1:] != fitted[:-1]])
    weights = np.add.reduceat(counts, steps)
    centres = np.add.reduceat(knots * counts, steps) / weights
    values = fitted[steps]
    if centres.size > 1:
        centres = np.r_[knots[0], centres, knots[-1]]
        values = np.r_[values[0], values, values[-1]]
    return Calibrator("isotonic", tuple(centres.tolist()), tuple(np.clip(values, 0.0, 1.0).tolist()),
                      int(y.size), int(y.sum()))


def _fit_platt(y: np.ndarray, s: np.ndarray) -> Calibrator:
    """Logistic regression of y on logit(score), by Newton's method (Platt's smoothed targets).

    Each Newton step is halved until the log loss falls: a full step from far away (scores pushed
    towards 0 and 1, so logits of +-13) can overshoot and run off to infinity.
    """
    n_pos, n_neg = y.sum(), y.size - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.column_stack([_logit(s), np.ones_like(s)])

    def loss(w: np.ndarray) -> float:
        z = X @ w  # log(1 + e^z) - t z, computed without overflow
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    w = np.array([1.0, 0.0])
    current = loss(w)
    for _ in range(100):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - t)
        hess = X.T @ (X * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        for _ in range(50):
            new = loss(w - step)
            if new <= current:
                break
            step = step / 2
        w, current = w - step, min(new, current)
        if np.abs(step).max() < 1e-10:
            break
    return Calibrator("platt", (float(w[0]), float(w[1])), (), int(y.size), int(n_pos))


def expected_auc(scores: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC expected when row i is positive with probability p_i, ranked by ``scores`` (ties halved)."""
    order = np.argsort(-scores, kind="stable")
    s, w = scores[order], p[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    tp = np.add.reduceat(w, starts)
    fp = np.add.reduceat(1.0 - w, starts)
    total_p, total_n = tp.sum(), fp.sum()
    if total_p <= 0 or total_n <= 0:
        return None
    tpr = np.r_[0.0, np.cumsum(tp)] / total_p
    fpr = np.r_[0.0, np.cumsum(fp)] / total_n
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def to_prior(p: np.ndarray, prior: float, train_prior: float) -> np.ndarray:
    """Posteriors calibrated under ``train_prior`` re-weighted to a batch whose prior is ``prior``."""
    pos = p * (prior / train_prior)
    neg = (1.0 - p) * ((1.0 - prior) / (1.0 - train_prior))
    total = pos + neg
    return np.divide(pos, total, out=np.full_like(p, prior), where=total > 0)


def em_prior(p: np.ndarray, train_prior: float, max_iter: int = 1000, tol: float = 1e-9) -> float:
    """The batch's positive rate by EM on calibrated posteriors (Saerens et al., 2002), no labels.

    Iterates prior <- mean(to_prior(p, prior, train_prior)) from the training prior; it converges
    to the maximum-likelihood prior of the mixture when P(score | y) is as at training time.
    """
    if not 0.0 < train_prior < 1.0:
        raise DataError(f"the training prior must be between 0 and 1, got {train_prior!r}")
    prior = train_prior
    for _ in range(max_iter):
        new = float(to_prior(p, prior, train_prior).mean())
        if abs(new - prior) < tol:
            return new
        prior = new
    return prior


def estimate_metrics(scores: np.ndarray, calibrator: Calibrator, threshold: float = 0.5,
                     prior_shift: str = "none") -> dict[str, Any]:
    """Expected accuracy, precision, recall, F1 and ROC AUC of the scores on an unlabelled batch.

    With ``prior_shift="em"`` the calibrated probabilities are first moved to the batch's class
    prior estimated by :func:`em_prior` (the training prior is the calibrator's holdout rate).
    """
    if prior_shift not in PRIOR_SHIFT:
        raise DataError(f"prior_shift must be 'none' or 'em', got {prior_shift!r}")
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise DataError("no scores to estimate from")
    p = calibrator(s)
    train_prior = calibrator.positives / calibrator.n if calibrator.n else math.nan
    prior = None
    if prior_shift == "em":
        prior = em_prior(p, train_prior)
        p = to_prior(p, prior, train_prior)
    pred = s >= threshold
    tp, fp = float(p[pred].sum()), float((1 - p[pred]).sum())
    fn = float(p[~pred].sum())
    correct = np.where(pred, p, 1 - p)
    n = s.size

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else 0.0

    return {
        "accuracy": float(correct.mean()),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": expected_auc(s, p),
        # the realised accuracy scatters around the expectation by this much on n rows
        "accuracy_se": float(math.sqrt(float(np.sum(correct * (1 - correct)))) / n),
        "expected_positive_rate": float(p.mean()),
        "estimated_prior": prior,  # EM's estimate of the batch's positive rate; None without it
        "n": int(n),
    }


# --- after the labels came: how far the estimate missed, and why -----------------------------------

TOLERANCE = 0.02  # a miss within 2 points of accuracy (or any metric) is agreement
WITHIN = f"within {100 * TOLERANCE:.0f} points"
RATE_SHIFT = 0.02  # the realised positive rate this far from the expected one is a label shift
RANKING_FALL = 0.05  # realised ROC AUC this far below the estimate: the model ranks worse than calibrated


def explain_miss(estimated: float | None, realised: float | None, expected_rate: float | None,
                 realised_rate: float | None, estimated_auc: float | None, realised_auc: float | None,
                 source: str | None, tolerance: float = TOLERANCE) -> list[str]:
    """Why an estimate missed the realised value (empty when within ``tolerance``).

    CBPE assumes the calibration data's P(y | score) still holds; each reason names a way it did not:
    the batch's positive rate moved without the scores following (label shift the features do not
    carry), the model ranked worse than on its calibration data, or the calibration data was the
    training holdout (from the model's own training month: under a random holdout it even shares days
    with the training rows and flatters the model).
    """
    if estimated is None or realised is None or abs(estimated - realised) <= tolerance:
        return []
    reasons = []
    if expected_rate is not None and realised_rate is not None and abs(realised_rate - expected_rate) > RATE_SHIFT:
        reasons.append(f"label shift: {100 * realised_rate:.1f}% positive, {100 * expected_rate:.1f}% expected")
    if estimated_auc is not None and realised_auc is not None and estimated_auc - realised_auc > RANKING_FALL:
        reasons.append(f"ranking fell: AUC {realised_auc:.3f}, {estimated_auc:.3f} expected")
    if source == "holdout":
        reasons.append("calibrated on the training holdout")
    return reasons or ["no single cause: positive rate and ranking as expected"]
