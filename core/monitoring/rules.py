"""The alert rules: one run's summary turned into one verdict (a Check) per rule.

The default rules fire on what hurts the model: drift of the features it relies on (each drifted feature
weighted by its share of the model's importance), drift of its scores, and a fall of its metric below
the training-time value, realised or estimated without labels. The per-feature rule (any feature that
drifted, however little the model uses it) is off by default: on seasonal data it fires on every batch.
"""

from __future__ import annotations

import math
from typing import Any

from keel.core.config import AlertsConfig, MonitorConfig
from keel.core.model.evaluate import HIGHER_IS_BETTER
from keel.core.monitoring.alerts import Check


def _gains(importance: dict[str, float] | None) -> dict[str, float]:
    """The model's importance as shares summing to 1 (positive, finite gains only)."""
    gains = {name: float(g) for name, g in (importance or {}).items()
             if isinstance(g, int | float) and math.isfinite(float(g)) and g > 0}
    total = sum(gains.values())
    return {name: g / total for name, g in gains.items()} if total > 0 else {}


def importance_share(drifted: list[str], importance: dict[str, float] | None) -> float:
    """The share of the model's importance (gain) carried by the drifted features, 0 to 1."""
    shares = _gains(importance)
    return sum(shares.get(name, 0.0) for name in set(drifted))


def weighted_drift(features: list[dict[str, Any]], importance: dict[str, float] | None) -> float:
    """Importance-weighted drift: the sum over drifted features of their importance share times their effect
    size (Wasserstein distance over the reference's std for numeric features, PSI for categorical ones).
    0 when nothing drifted or the model gave no importance; 0.5 is, e.g., all of the model's inputs moved
    by half a standard deviation, or half of them by one."""
    shares = _gains(importance)
    total = 0.0
    for f in features:
        effect = f.get("effect_size")
        if f.get("drifted") and isinstance(effect, int | float) and math.isfinite(float(effect)):
            total += shares.get(str(f.get("name")), 0.0) * float(effect)
    return total


def _listed(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit})" if len(names) > limit else "")


def drift_checks(drift: dict[str, Any], importance: dict[str, float] | None, cfg: AlertsConfig,
                 batch: str) -> list[Check]:
    """The three drift rules on one batch's drift summary: importance-weighted, prediction, per feature."""
    drifted = list(drift.get("drifted") or [])
    weighted, share = weighted_drift(drift.get("features") or [], importance), importance_share(drifted, importance)
    gains = _gains(importance)
    ranked = sorted(drifted, key=lambda name: (-gains.get(name, 0.0), name))
    what = (f"importance-weighted drift {weighted:.2f} on {batch} (alert at {cfg.drift_threshold:g}): "
            f"{len(drifted)} drifted feature(s) carrying {100 * share:.0f}% of the model's importance")
    out = [Check("drift", weighted >= cfg.drift_threshold, what + (f" ({_listed(ranked)})" if drifted else ""),
                 weighted)]
    prediction = drift.get("prediction") or {}
    if prediction:
        raw, p = prediction.get("effect_size"), prediction.get("p_corrected")
        effect = float(raw) if isinstance(raw, int | float) and math.isfinite(raw) else None
        known = effect is not None
        moved = bool(prediction.get("drifted")) and effect is not None and effect >= cfg.prediction_effect
        out.append(Check("prediction_drift", moved,
                         f"the model's scores on {batch} {'drifted' if moved else 'held'}: effect size "
                         f"{f'{effect:.3f}' if known else '-'} (alert at {cfg.prediction_effect:g}), "
                         f"p {f'{p:.2g}' if isinstance(p, int | float) else '-'}",
                         effect))
    text = f"{len(drifted)} feature(s) drifted on {batch}: {_listed(drifted)}" if drifted else f"no feature drifted on {batch}"
    out.append(Check("feature_drift", bool(drifted), text, float(len(drifted))))
    return out


def worse(metric: str, value: float, base: float, max_drop: float) -> bool:
    """Whether ``value`` is more than ``max_drop`` worse than ``base`` (a rise for log_loss and brier)."""
    return value < base - max_drop if HIGHER_IS_BETTER.get(metric, True) else value > base + max_drop


def checks(summary: dict[str, Any], baseline: dict[str, Any] | None, importance: dict[str, float] | None,
           monitor: MonitorConfig, cfg: AlertsConfig) -> list[Check]:
    """Every rule's verdict on one run (a rule whose inputs the run lacks gives none)."""
    status, batch = summary.get("status"), summary.get("batch") or "?"
    name = str(batch).rsplit("/", 1)[-1]
    out = [Check("failure", status == "failed", f"run on {name} failed: {summary.get('error') or '-'}")]
    if status == "failed":
        return out
    reasons = summary.get("reasons") or ["-"]
    out.append(Check("quarantine", status == "quarantined", f"batch {name} quarantined: {reasons[0]}"))
    if summary.get("drift") is not None:
        out += drift_checks(summary["drift"], importance, cfg, name)
    metric, max_drop = monitor.metric, monitor.max_drop
    base = (baseline or {}).get(metric)
    for rule, values, word in (("drop", summary.get("metrics"), "realised"),
                               ("estimated_drop", summary.get("estimate"), "estimated")):
        value = (values or {}).get(metric)
        if isinstance(base, int | float) and isinstance(value, int | float):
            out.append(Check(rule, worse(metric, value, base, max_drop),
                             f"{word} {metric} {value:.3f} on {name}, {base:.3f} at training "
                             f"(allowed change {max_drop:g})", float(value)))
    return out
