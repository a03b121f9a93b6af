"""Tests for keel.core.model.evaluate: metrics vs sklearn, DeLong, McNemar, bootstrap, Holm, churn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from keel.core.errors import ConfigError, DataError
from keel.core.model.evaluate import (
    HIGHER_IS_BETTER,
    METRICS,
    _weighted_auc,
    classification_metrics,
    compare_models,
    confusion_drift,
    delong_test,
    holm,
    mcnemar_test,
    paired_bootstrap,
)


def _scores(seed: int, n: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    proba = 1 / (1 + np.exp(-(1.5 * (y - 0.5) + rng.normal(0, noise, n))))
    return y, proba


# --- classification_metrics ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_metrics_match_sklearn(seed: int, threshold: float) -> None:
    y, proba = _scores(seed, 700)
    proba = np.round(proba, 2)  # many ties, to exercise midranks
    pred = (proba >= threshold).astype(int)
    got = classification_metrics(y, proba, threshold)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert got["brier"] == pytest.approx(skm.brier_score_loss(y, proba))
    assert got["confusion"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert got["n"] == 700 and got["positives"] == int(y.sum())
    assert set(METRICS) <= got.keys()


def test_metrics_edge_cases() -> None:
    one_class = classification_metrics(np.ones(4, int), np.array([0.2, 0.6, 0.7, 0.9]))
    assert one_class["roc_auc"] is None
    assert one_class["recall"] == pytest.approx(0.75)
    none_predicted = classification_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2, 0.3]))
    assert none_predicted["precision"] == 0.0 and none_predicted["f1"] == 0.0
    hard = classification_metrics(np.array([0, 1]), np.array([1.0, 1.0]))
    assert math.isfinite(hard["log_loss"])
    assert hard["log_loss"] == pytest.approx(-math.log(1e-15) / 2, rel=1e-2)  # clipped, not inf
    json.dumps(one_class)


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(DataError):
        classification_metrics(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(DataError):
        classification_metrics(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(DataError):
        classification_metrics(np.array([], int), np.array([]))


# --- confusion drift -----------------------------------------------------------------------------


def test_confusion_drift_hand_checked() -> None:
    ref, cur = [[50, 10], [10, 30]], [[30, 30], [20, 20]]
    table = np.array([[50, 10, 10, 30], [30, 30, 20, 20]], float)
    expected = table.sum(1, keepdims=True) * table.sum(0) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    got = confusion_drift(ref, cur)
    assert got["statistic"] == pytest.approx(chi2)
    assert got["dof"] == 3
    assert got["p_value"] == pytest.approx(stats.chi2.sf(chi2, 3))
    assert got["drifted_at_0.05"] is True
    json.dumps(got)


def test_confusion_drift_same_shape_and_empty_cells() -> None:
    same = confusion_drift([[500, 100], [100, 300]], [[50, 10], [10, 30]])
    assert same["statistic"] == pytest.approx(0.0) and same["drifted_at_0.05"] is False
    sparse = confusion_drift([[10, 0], [0, 10]], [[12, 0], [0, 8]])  # fp, fn empty in both
    assert sparse["dof"] == 1 and 0 < sparse["p_value"] <= 1
    with pytest.raises(DataError):
        confusion_drift([[1, 2], [3]], [[1, 2], [3, 4]])


# --- DeLong --------------------------------------------------------------------------------------


def _naive_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong (1988) from the full pairwise kernel: O(m n), independent of the rank shortcut."""

    def comps(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        diff = s[y == 1][:, None] - s[y == 0][None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = comps(a), comps(b)
    var = np.cov(a10 - b10) / a10.size + np.cov(a01 - b01) / a01.size
    return float(a10.mean() - b10.mean()), float(math.sqrt(var))


def test_delong_hand_example() -> None:
    # Worked by hand: AUC_a = 5/6, AUC_b = 11/12 (one tie), Var(delta) = 1/144 + 1/144 = 1/72.
    y = np.array([1, 1, 1, 0, 0])
    a = np.array([0.9, 0.8, 0.3, 0.4, 0.1])
    b = np.array([0.7, 0.6, 0.5, 0.5, 0.2])
    r = delong_test(y, a, b)
    assert r["auc_a"] == pytest.approx(5 / 6) and r["auc_b"] == pytest.approx(11 / 12)
    assert r["delta"] == pytest.approx(-1 / 12)
    assert r["se"] == pytest.approx(math.sqrt(1 / 72))
    assert r["z"] == pytest.approx(-1 / math.sqrt(2))
    assert r["p_value"] == pytest.approx(math.erfc(0.5))  # 2 * Phi(-1/sqrt 2)
    assert r["ci_low"] == pytest.approx(-1 / 12 - 1.959964 * math.sqrt(1 / 72), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_delong_matches_naive_kernel(seed: int) -> None:
    y, a = _scores(seed, 300)
    b = np.round(np.clip(a + np.random.default_rng(seed + 9).normal(0, 0.2, 300), 0, 1), 1)
    r = delong_test(y, a, b)
    delta, se = _naive_delong(y, a, b)
    assert r["delta"] == pytest.approx(delta, abs=1e-12)
    assert r["se"] == pytest.approx(se, rel=1e-9)


def test_delong_se_close_to_bootstrap_se() -> None:
    rng = np.random.default_rng(11)
    n = 3000
    s = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * s))).astype(int)
    a, b = s + rng.normal(0, 0.8, n), s + rng.normal(0, 1.2, n)
    r = delong_test(y, a, b)
    boot = paired_bootstrap(y, a, b, ["roc_auc"], n_boot=600, seed=3)["roc_auc"]
    assert boot.std(ddof=1) == pytest.approx(r["se"], rel=0.15)
    assert boot.mean() == pytest.approx(r["delta"], abs=0.5 * r["se"])


def test_delong_p_values_uniform_under_null() -> None:
    p_values = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        s = rng.normal(size=400)
        y = (rng.random(400) < 1 / (1 + np.exp(-2 * s))).astype(int)
        p_values.append(
            delong_test(y, s + rng.normal(0, 1, 400), s + rng.normal(0, 1, 400))["p_value"]
        )
    p = np.array(p_values)
    assert 0.015 <= np.mean(p < 0.05) <= 0.09
    assert stats.kstest(p, "uniform").pvalue > 0.01


def test_delong_degenerate_inputs() -> None:
    one_class = delong_test(np.ones(5, int), np.arange(5.0), np.arange(5.0))
    assert one_class["auc_a"] is None and one_class["p_value"] is None
    y, a = _scores(1, 200)
    same = delong_test(y, a, a)
    assert same["delta"] == 0 and same["p_value"] == 1.0 and same["z"] is None


# --- McNemar -------------------------------------------------------------------------------------


def _paired(b: int, c: int, both_right: int = 40, both_wrong: int = 7) -> tuple[np.ndarray, ...]:
    y = np.ones(b + c + both_right + both_wrong, int)
    pred_a = np.r_[np.ones(b), np.zeros(c), np.ones(both_right), np.zeros(both_wrong)].astype(int)
    pred_b = np.r_[np.zeros(b), np.ones(c), np.ones(both_right), np.zeros(both_wrong)].astype(int)
    return y, pred_a, pred_b


def test_mcnemar_exact_branch() -> None:
    r = mcnemar_test(*_paired(3, 10))
    assert (r["b"], r["c"], r["method"]) == (3, 10, "exact")
    # 2 * P(X <= 3), X ~ Bin(13, 1/2) = 2 * (1 + 13 + 78 + 286) / 8192
    assert r["p_value"] == pytest.approx(2 * 378 / 8192)
    assert mcnemar_test(*_paired(12, 12))["p_value"] == 1.0  # capped
    assert mcnemar_test(*_paired(0, 0))["p_value"] == 1.0


def test_mcnemar_chi2_branch_with_continuity() -> None:
    r = mcnemar_test(*_paired(30, 15))
    assert (r["b"], r["c"], r["method"]) == (30, 15, "chi2")
    assert r["statistic"] == pytest.approx(196 / 45)  # (|30 - 15| - 1)^2 / 45
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(196 / 90)))  # chi2(1) survival
    assert mcnemar_test(*_paired(12, 12))["method"] == "exact"  # 24 discordant
    assert mcnemar_test(*_paired(13, 12))["method"] == "chi2"  # 25 discordant


# --- Holm, bootstrap, compare_models -------------------------------------------------------------


def test_holm_hand_checked() -> None:
    got = holm([0.01, 0.04, None, 0.03, 0.005])
    assert got[2] is None
    assert got[:2] + got[3:] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_weighted_auc_equals_auc_of_resample() -> None:
    y, p = _scores(4, 500)
    p = np.round(p, 2)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 500, 500)
    w = np.bincount(idx, minlength=500).astype(float)[None, :]
    assert _weighted_auc(w, y, p)[0] == pytest.approx(skm.roc_auc_score(y[idx], p[idx]))


def test_each_bootstrap_resample_scores_as_the_rows_it_drew() -> None:
    """A resample's metric from the per-row terms and its draw counts equals the metric of the drawn rows."""
    y, a = _scores(7, 400)
    _, b = _scores(8, 400, noise=1.5)
    metrics = ["accuracy", "precision", "recall", "f1", "log_loss", "brier", "roc_auc"]
    boot = paired_bootstrap(y, a, b, metrics, n_boot=3, seed=11)
    draws = np.random.default_rng(11).integers(0, 400, size=(3, 400))  # the draws paired_bootstrap makes
    for r, idx in enumerate(draws):
        on_a, on_b = classification_metrics(y[idx], a[idx]), classification_metrics(y[idx], b[idx])
        for m in metrics:
            d = on_a[m] - on_b[m]
            assert boot[m][r] == pytest.approx(d if HIGHER_IS_BETTER[m] else -d, abs=1e-12), m


def test_paired_bootstrap_shares_resamples_and_chunks() -> None:
    y, p = _scores(2, 60_000)
    boot = paired_bootstrap(y, p, p, ["accuracy", "log_loss", "roc_auc"], n_boot=150, seed=1)
    for values in boot.values():  # identical models: every paired resample differs by exactly 0
        assert values.shape == (150,) and np.all(values == 0)


def test_compare_models_values_and_orientation() -> None:
    y, prod = _scores(5, 2000, noise=1.5)
    rng = np.random.default_rng(6)
    cand = 1 / (
        1 + np.exp(-(np.log(prod / (1 - prod)) * 0.5 + 2 * (y - 0.5) + rng.normal(0, 0.3, 2000)))
    )
    cmp_ = compare_models(y, cand, prod, n_boot=400, seed=1)
    cm, pm = classification_metrics(y, cand), classification_metrics(y, prod)
    assert cmp_.candidate_metrics == cm and cmp_.production_metrics == pm
    ll = cmp_.metrics["log_loss"]
    assert ll.delta == pytest.approx(cm["log_loss"] - pm["log_loss"])
    assert ll.improvement == pytest.approx(-ll.delta) and ll.improvement > 0
    assert ll.ci_low <= ll.improvement <= ll.ci_high
    assert cmp_.metrics["roc_auc"].test == "delong"
    assert cmp_.metrics["accuracy"].test == "mcnemar"
    assert cmp_.metrics["f1"].test == "bootstrap"
    assert cmp_.churn == pytest.approx(np.mean((cand >= 0.5) != (prod >= 0.5)))
    raw = [m.p_value for m in cmp_.metrics.values()]
    assert [m.p_adjusted for m in cmp_.metrics.values()] == pytest.approx(holm(raw))
    assert all(m.p_adjusted >= m.p_value for m in cmp_.metrics.values())


def test_compare_models_deterministic_and_json_safe() -> None:
    y, a = _scores(7, 1500)
    _, b = _scores(8, 1500)
    one = compare_models(y, a, b, n_boot=200, seed=3).to_dict()
    assert one == compare_models(y, a, b, n_boot=200, seed=3).to_dict()
    other = compare_models(y, a, b, n_boot=200, seed=4).to_dict()
    assert one["metrics"]["f1"]["ci_low"] != other["metrics"]["f1"]["ci_low"]
    json.loads(json.dumps(one, allow_nan=False))
    single = compare_models(np.ones(50, int), a[:50], b[:50], n_boot=50).to_dict()
    assert single["metrics"]["roc_auc"]["candidate"] is None
    json.dumps(single, allow_nan=False)


def test_compare_models_without_bootstrap_and_bad_metric() -> None:
    y, a = _scores(9, 800)
    cmp_ = compare_models(y, a, a, metrics=("roc_auc", "brier"), n_boot=0)
    assert cmp_.churn == 0.0 and cmp_.metrics["brier"].ci_low is None
    assert cmp_.metrics["roc_auc"].p_value == 1.0
    with pytest.raises(ConfigError):
        compare_models(y, a, a, metrics=("auc",))
    assert set(HIGHER_IS_BETTER) == set(METRICS)
