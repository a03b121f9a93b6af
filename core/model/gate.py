"""The promotion gate: policy, candidate metrics and comparison in; promote/reject/review out.

The policy is keel.toml's `[gate]` section (:class:`keel.core.config.GateConfig`). Rule on the primary metric, with `improvement` = candidate - production oriented so higher is
better and its (1 - alpha) CI from `compare_models`: reject when the candidate is significantly
worse (ci_high < 0) AND worse beyond the margin (improvement < -margin); promote-eligible when
non-inferior (ci_low > -margin); otherwise review (ambiguous). A missed absolute minimum always
rejects. A promote-eligible candidate still goes to review when a guard metric is significantly
worse beyond the margin (p_adjusted < alpha and improvement < -margin), churn exceeds max_churn,
drift is present and review_on_drift is set, or auto_promote is off. Every reason is a sentence
with its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.core.config import GateConfig
from keel.core.errors import ConfigError
from keel.core.model.evaluate import HIGHER_IS_BETTER, Comparison, MetricComparison

OUTCOMES = ("promote", "reject", "review")
_LABELS = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "log_loss": "Log loss",
    "brier": "Brier score",
}


@dataclass
class GateDecision:
    """The gate's outcome with the reasons behind it, in plain words with numbers."""

    outcome: str
    reasons: list[str]
    policy_hash: str

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "policy_hash": self.policy_hash,
        }


def _signed(x: float) -> str:
    return f"{x + 0.0:+.3f}" if round(x, 3) != 0 else "+0.000"  # never "-0.000"


def _pair(value: float, bound: float) -> tuple[str, str]:
    """Value and bound at 3 decimals, or more when 3 would make them look equal."""
    digits = 3
    while digits < 8 and value != bound and f"{value:.{digits}f}" == f"{bound:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f}", f"{bound:.{digits}f}"


def _minimum_check(metric: str, bound: float, value: float | None) -> tuple[bool, str]:
    """Whether the candidate meets one absolute bound, and the sentence saying so."""
    label = _LABELS[metric]
    if value is None:
        return (
            False,
            f"{label} could not be computed on the holdout, so its minimum {bound:.3f} is not met",
        )
    if HIGHER_IS_BETTER[metric]:
        ok, kind = value >= bound, "floor"
    else:
        ok, kind = value <= bound, "ceiling"
    shown, limit = _pair(value, bound)
    return ok, f"{label} {shown} {'meets' if ok else 'misses'} the {kind} of {limit}"


def _check_minimums(policy: GateConfig, candidate_metrics: dict) -> tuple[bool, list[str]]:
    results = [
        _minimum_check(m, b, candidate_metrics.get(m)) for m, b in sorted(policy.minimums.items())
    ]
    return all(ok for ok, _ in results), [text for _, text in results]


def _comparison_head(mc: MetricComparison, level: int) -> str:
    """'ROC AUC 0.731 vs 0.712 in production: +0.019 (95% CI +0.011 to +0.027)'."""
    label = _LABELS[mc.metric]
    head = f"{label} {mc.candidate:.3f} vs {mc.production:.3f} in production: "
    change = _signed(mc.improvement)  # type: ignore[arg-type]
    notes = []
    if not mc.higher_is_better:
        change, notes = f"improvement {change}", ["lower is better"]
    if mc.ci_low is not None and mc.ci_high is not None:
        notes.append(f"{level}% CI {_signed(mc.ci_low)} to {_signed(mc.ci_high)}")
    return head + change + (f" ({'; '.join(notes)})" if notes else "")


def _primary_verdict(mc: MetricComparison, margin: float, level: int) -> tuple[str, str]:
    """'reject' | 'eligible' | 'review' for the primary metric, and its sentence."""
    if mc.candidate is None or mc.production is None or mc.improvement is None:
        return (
            "review",
            f"{_LABELS[mc.metric]} cannot be compared on this holdout (one class only?)",
        )
    head = _comparison_head(mc, level)
    if mc.ci_low is None or mc.ci_high is None:
        return "review", head + "; without an interval non-inferiority cannot be shown"
    if mc.ci_high < 0 and mc.improvement < -margin:
        return "reject", head + f", significantly worse and beyond the {margin:.3f} margin"
    if mc.ci_low > -margin:
        return "eligible", head + f", not worse than the {margin:.3f} margin"
    return "review", head + f", inconclusive: the interval reaches below the -{margin:.3f} margin"


def _guard_reasons(policy: GateConfig, comparison: Comparison, level: int) -> list[str]:
    """Sentences for guard metrics that are significantly worse beyond the margin."""
    out = []
    for name in policy.guard_metrics:
        mc = comparison.metrics.get(name)
        if mc is None:
            raise ConfigError(
                f"gate.guard_metrics: {name!r} was not compared; add it to the comparison"
            )
        p = mc.p_adjusted if mc.p_adjusted is not None else mc.p_value
        if mc.improvement is None or p is None:
            continue
        if p < policy.alpha and mc.improvement < -policy.margin:
            out.append(
                f"Guard {_comparison_head(mc, level)}, significantly worse "
                f"(adjusted p = {p:.3g}) beyond the {policy.margin:.3f} margin"
            )
    return out


def _churn_sentence(policy: GateConfig, comparison: Comparison) -> tuple[bool, str]:
    changed = round(comparison.churn * comparison.n)
    text = f"Churn {comparison.churn:.1%}: {changed:,} of {comparison.n:,} predictions change class"
    if policy.max_churn is None:
        return False, text + " (no churn limit set)"
    over = comparison.churn > policy.max_churn
    return over, text + (
        f", above the {policy.max_churn:.1%} limit"
        if over
        else f", within the {policy.max_churn:.1%} limit"
    )


def _first_model(policy: GateConfig, candidate_metrics: dict) -> GateDecision:
    met, reasons = _check_minimums(policy, candidate_metrics)
    reasons = [
        "No model in production: the candidate is judged on the absolute minimums only",
        *reasons,
    ]
    if not met:
        outcome = "reject"
    elif policy.auto_promote:
        outcome = "promote"
    else:
        outcome = "review"
        reasons.append("Automatic promotion is off: a person must approve")
    return GateDecision(outcome, reasons, policy.policy_hash())


def decide(
    policy: GateConfig,
    candidate_metrics: dict,
    comparison: Comparison | None,
    *,
    drift_detected: bool = False,
) -> GateDecision:
    """Apply the policy: 'promote', 'reject' or 'review', with every reason in plain words."""
    if comparison is None:
        return _first_model(policy, candidate_metrics)
    if abs(comparison.alpha - policy.alpha) > 1e-12:
        raise ConfigError(
            f"gate.alpha is {policy.alpha} but the comparison was made at alpha "
            f"{comparison.alpha}; compare with the policy's alpha"
        )
    primary = comparison.metrics.get(policy.metric)
    if primary is None:
        raise ConfigError(
            f"gate.metric: {policy.metric!r} was not compared; add it to the comparison"
        )
    level = round(100 * (1 - policy.alpha))
    verdict, primary_text = _primary_verdict(primary, policy.margin, level)
    over_churn, churn_text = _churn_sentence(policy, comparison)
    met, minimum_texts = _check_minimums(policy, candidate_metrics)
    reasons = [primary_text, churn_text, *minimum_texts]
    if not met or verdict == "reject":
        return GateDecision("reject", reasons, policy.policy_hash())
    flags = _guard_reasons(policy, comparison, level)
    if over_churn:
        flags.append(f"Churn above the {policy.max_churn:.1%} limit needs a person to look")
    if drift_detected and policy.review_on_drift:
        flags.append(
            "Drift was detected in this batch and the policy sends drifted batches to review"
        )
    elif drift_detected:
        reasons.append("Drift was detected in this batch; the policy does not send it to review")
    if not policy.auto_promote:
        flags.append("Automatic promotion is off: a person must approve")
    outcome = "promote" if verdict == "eligible" and not flags else "review"
    return GateDecision(outcome, reasons + flags, policy.policy_hash())
