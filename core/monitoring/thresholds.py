"""Alert thresholds on metric points: limits from the training-time values, breaches, stored points."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import col

from keel.core.model.evaluate import HIGHER_IS_BETTER
from keel.core.store import records
from keel.core.store.engine import unit_of_work
from keel.core.store.models import MetricPoint
from keel.core.workspace import Workspace

log = logging.getLogger(__name__)


Thresholds = dict[str, tuple[float | None, float | None]]


# --- thresholds ----------------------------------------------------------------------------------


def thresholds(baseline: dict[str, Any] | None, max_drop: float) -> Thresholds:
    """Per metric (lower, upper): the training-time value worsened by ``max_drop``, in its bad direction."""
    out: Thresholds = {}
    for name, higher in HIGHER_IS_BETTER.items():
        base = (baseline or {}).get(name)
        if isinstance(base, int | float):
            out[name] = (base - max_drop, None) if higher else (None, base + max_drop)
    out["confusion_drift_p"] = (0.05, None)
    return out


def breaches(values: dict[str, Any], limits: Thresholds) -> set[str]:
    """Metrics whose value is on the wrong side of its threshold (only worse counts)."""
    out = set()
    for name, (lo, hi) in limits.items():
        v = values.get(name)
        if isinstance(v, int | float) and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            out.add(name)
    return out


def flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics, with the confusion-drift test as two points of its own."""
    out: dict[str, Any] = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    cd = metrics.get("confusion_drift")
    if isinstance(cd, dict):
        out["confusion_drift_p"] = cd.get("p_value")
        out["confusion_cramers_v"] = cd.get("cramers_v")
    return out


@unit_of_work
def store_points(ws: Workspace, model_version_id: int, dataset_id: str, scope: str, values: dict[str, Any],
                 run_id: str | None, limits: Thresholds) -> set[str]:
    """Insert or update the metric points of one model on one dataset, thresholds and alert flags set."""
    flagged = breaches(values, limits)
    records.record_metrics(ws, model_version_id, dataset_id, scope, values, run_id, limits, flagged)
    if not values:
        return flagged
    # record_metrics keeps the first row: bring existing ones up to date, in one statement run for every metric
    stmt = update(MetricPoint).where(
        col(MetricPoint.model_version_id) == bindparam("k_model"), col(MetricPoint.dataset_id) == bindparam("k_dataset"),
        col(MetricPoint.scope) == bindparam("k_scope"), col(MetricPoint.name) == bindparam("k_name"),
    ).values(value=bindparam("v_value"), lower=bindparam("v_lower"), upper=bindparam("v_upper"),
             alert=bindparam("v_alert")).execution_options(synchronize_session=False)
    params = [{"k_model": model_version_id, "k_dataset": dataset_id, "k_scope": scope, "k_name": name,
               "v_value": records.clean(value), "v_lower": limits.get(name, (None, None))[0],
               "v_upper": limits.get(name, (None, None))[1], "v_alert": name in flagged}
              for name, value in values.items()]
    with ws.session() as session:
        session.connection().execute(stmt, params)
    return flagged
