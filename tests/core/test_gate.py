"""Tests for keel.core.model.gate: the promotion policy's outcomes, reasons, error rates and hash."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from keel.core.config import GateConfig, parse_config
from keel.core.errors import ConfigError
from keel.core.model.evaluate import classification_metrics, compare_models
from keel.core.model.gate import GateDecision, decide

PRIMARY = re.compile(
    r"^ROC AUC 0\.\d{3} vs 0\.\d{3} in production: [+-]\d\.\d{3} "
    r"\(95% CI [+-]\d\.\d{3} to [+-]\d\.\d{3}\)"
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _world(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """Labels drawn from a true score; returns labels, the true logit and the generator."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 1.5, n)
    y = (rng.random(n) < _sigmoid(logit)).astype(int)
    return y, logit, rng


def _run(
    policy: GateConfig, y: np.ndarray, cand: np.ndarray, prod: np.ndarray, **kw
) -> GateDecision:
    cmp_ = compare_models(y, cand, prod, n_boot=200, seed=0, alpha=policy.alpha)
    return decide(policy, classification_metrics(y, cand), cmp_, **kw)


def _near_copy(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, logit, rng = _world(seed)
    prod = _sigmoid(logit + rng.normal(0, 0.3, logit.size))
    cand = _sigmoid(np.log(prod / (1 - prod)) + rng.normal(0, 0.01, logit.size))
    return y, cand, prod


def test_gate_rejects_worse_candidate() -> None:
    y, logit, rng = _world(4)
    prod = _sigmoid(logit + rng.normal(0, 0.3, logit.size))
    cand = _sigmoid(logit + rng.normal(0, 3.0, logit.size))  # the same, drowned in noise
    decision = _run(GateConfig(), y, cand, prod)
    assert decision.outcome == "reject"
    assert PRIMARY.match(decision.reasons[0])
    assert "significantly worse" in decision.reasons[0]


def test_equal_candidate_within_margin_promoted_or_reviewed() -> None:
    y, cand, prod = _near_copy()
    auto = _run(GateConfig(), y, cand, prod)
    assert auto.outcome == "promote", auto.reasons
    assert PRIMARY.match(auto.reasons[0]) and "not worse than the 0.010 margin" in auto.reasons[0]
    assert auto.reasons[1].startswith("Churn ")
    manual = _run(GateConfig(auto_promote=False), y, cand, prod)
    assert manual.outcome == "review"
    assert any("Automatic promotion is off" in r for r in manual.reasons)


def test_ambiguous_candidate_goes_to_review() -> None:
    y, logit, rng = _world(2, n=300)  # small holdout: wide interval straddling the margin
    prod = _sigmoid(logit + rng.normal(0, 1.0, logit.size))
    cand = _sigmoid(logit + rng.normal(0, 1.0, logit.size))
    cmp_ = compare_models(y, cand, prod, n_boot=100)
    auc = cmp_.metrics["roc_auc"]
    assert auc.ci_low < -0.01 and auc.ci_high > 0  # the premise of this test
    decision = decide(GateConfig(), classification_metrics(y, cand), cmp_)
    assert decision.outcome == "review" and "inconclusive" in decision.reasons[0]


def test_first_model_judged_on_minimums() -> None:
    y, logit, rng = _world(3)
    good = classification_metrics(y, _sigmoid(logit + rng.normal(0, 0.3, logit.size)))
    bad = classification_metrics(y, rng.random(logit.size))
    assert decide(GateConfig(), good, None).outcome == "promote"
    assert decide(GateConfig(auto_promote=False), good, None).outcome == "review"
    rejected = decide(GateConfig(), bad, None)
    assert rejected.outcome == "reject"
    assert any(
        re.search(r"ROC AUC 0\.\d{3,} misses the floor of 0\.600", r) for r in rejected.reasons
    )
    close = decide(GateConfig(), {"roc_auc": 0.59996}, None)
    assert close.outcome == "reject"
    shown = re.search(r"ROC AUC (\S+) misses the floor of (\S+)", " ".join(close.reasons))
    assert shown and shown[1] != shown[2]  # rounding must not make a miss look like a tie


def test_lower_is_better_primary_metric_sentence() -> None:
    y, logit, rng = _world(8)
    prod = _sigmoid(0.3 * logit + rng.normal(0, 0.3, logit.size))  # under-confident
    cand = _sigmoid(logit + rng.normal(0, 0.3, logit.size))
    policy = GateConfig(metric="log_loss", minimums={})
    decision = _run(policy, y, cand, prod)
    assert decision.outcome == "promote", decision.reasons
    assert re.match(
        r"Log loss 0\.\d{3} vs 0\.\d{3} in production: improvement \+0\.\d{3} "
        r"\(lower is better; 95% CI \+",
        decision.reasons[0],
    )


def test_minimums_reject_even_when_non_inferior() -> None:
    y, cand, prod = _near_copy()
    ceiling = GateConfig(minimums={"roc_auc": 0.6, "log_loss": 0.05})  # a ceiling for log loss
    decision = _run(ceiling, y, cand, prod)
    assert decision.outcome == "reject"
    assert any("Log loss" in r and "misses the ceiling of 0.050" in r for r in decision.reasons)


def test_gate_false_rejection_rate_on_equal_models_within_alpha() -> None:
    policies = [GateConfig(guard_metrics=()), GateConfig(guard_metrics=(), margin=0.0)]
    rejected = np.zeros(len(policies))
    seeds = 200
    for seed in range(seeds):
        y, logit, rng = _world(1000 + seed)
        a = _sigmoid(logit + rng.normal(0, 1.0, logit.size))
        b = _sigmoid(logit + rng.normal(0, 1.0, logit.size))
        cmp_ = compare_models(y, a, b, metrics=("roc_auc",), n_boot=0)
        metrics = cmp_.candidate_metrics
        rejected += [decide(p, metrics, cmp_).outcome == "reject" for p in policies]
    rates = rejected / seeds
    assert rates[0] <= 0.05  # with the default 0.01 margin
    assert rates[1] <= 0.05  # even with no margin the one-sided error stays near alpha / 2


def test_churn_guardrail_triggers_review() -> None:
    y, cand, prod = _near_copy()
    cmp_ = compare_models(y, cand, prod, n_boot=200)
    assert 0 < cmp_.churn < 0.05
    below = decide(GateConfig(max_churn=0.5), cmp_.candidate_metrics, cmp_)
    assert below.outcome == "promote" and "within the 50.0% limit" in below.reasons[1]
    above = decide(GateConfig(max_churn=cmp_.churn / 2), cmp_.candidate_metrics, cmp_)
    assert above.outcome == "review"
    assert re.match(
        r"Churn \d\.\d%: \d+ of 2,000 predictions change class, above", above.reasons[1]
    )


def test_review_on_drift() -> None:
    y, cand, prod = _near_copy()
    cmp_ = compare_models(y, cand, prod, n_boot=200)
    metrics = cmp_.candidate_metrics
    assert decide(GateConfig(review_on_drift=True), metrics, cmp_).outcome == "promote"
    flagged = decide(GateConfig(review_on_drift=True), metrics, cmp_, drift_detected=True)
    assert flagged.outcome == "review" and any("Drift" in r for r in flagged.reasons)
    noted = decide(GateConfig(), metrics, cmp_, drift_detected=True)
    assert noted.outcome == "promote" and any("Drift" in r for r in noted.reasons)


def test_guard_metric_worse_triggers_review() -> None:
    y, logit, rng = _world(6)
    prod = _sigmoid(logit + rng.normal(0, 0.3, logit.size))
    cand = prod**4  # same ranking (same AUC), badly calibrated: accuracy at 0.5 collapses
    decision = _run(GateConfig(), y, cand, prod)
    assert decision.outcome == "review"
    assert any(
        r.startswith("Guard Accuracy") and "significantly worse" in r for r in decision.reasons
    )
    assert _run(GateConfig(guard_metrics=()), y, cand, prod).outcome == "promote"


def test_single_class_holdout_goes_to_review() -> None:
    y = np.ones(50, int)
    rng = np.random.default_rng(0)
    cand, prod = rng.random(50), rng.random(50)
    cmp_ = compare_models(y, cand, prod, n_boot=50)
    decision = decide(GateConfig(minimums={}), cmp_.candidate_metrics, cmp_)
    assert decision.outcome == "review" and "cannot be compared" in decision.reasons[0]


def test_policy_hash_stable_and_sensitive() -> None:
    base = GateConfig()
    assert base.policy_hash() == GateConfig().policy_hash()
    assert len(base.policy_hash()) == 16
    two = GateConfig(minimums={"roc_auc": 0.6, "accuracy": 0.7})
    assert two.policy_hash() == GateConfig(minimums={"accuracy": 0.7, "roc_auc": 0.6}).policy_hash()
    changes = {
        "metric": "accuracy",
        "margin": 0.02,
        "alpha": 0.1,
        "auto_promote": False,
        "max_churn": 0.1,
        "guard_metrics": ["f1"],
        "minimums": {"roc_auc": 0.7},
        "review_on_drift": True,
    }
    hashes = {base.model_copy(update={k: v}).policy_hash() for k, v in changes.items()}
    assert len(hashes) == len(changes) and base.policy_hash() not in hashes


def test_policy_validation_and_wiring_errors() -> None:
    for bad, key in (({"metric": "auc"}, "gate.metric"), ({"minimums": {"gini": 0.2}}, "gate.minimums"),
                     ({"margin": -0.1}, "gate.margin"), ({"guard_metrics": ["gini"]}, "gate.guard_metrics")):
        with pytest.raises(ConfigError, match=key):
            parse_config({"model": "m", "target": "y", "gate": bad})
    y, cand, prod = _near_copy()
    cmp_ = compare_models(y, cand, prod, metrics=("roc_auc",), n_boot=0)
    with pytest.raises(ConfigError, match="alpha"):
        decide(GateConfig(alpha=0.1), cmp_.candidate_metrics, cmp_)
    with pytest.raises(ConfigError, match="guard_metrics"):
        decide(GateConfig(), cmp_.candidate_metrics, cmp_)


def test_decisions_are_json_safe() -> None:
    y, cand, prod = _near_copy()
    decision = _run(GateConfig(max_churn=0.2), y, cand, prod, drift_detected=True)
    data = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert (
        data["outcome"] == decision.outcome
        and data["policy_hash"] == GateConfig(max_churn=0.2).policy_hash()
    )
    assert all(isinstance(r, str) for r in data["reasons"])
    json.dumps(decide(GateConfig(), classification_metrics(y, cand), None).to_dict())
    json.dumps(GateConfig().model_dump(mode="json"))
