"""What the pipeline calls around a run: the label-free estimate after scoring, the alert rules after the run."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from sqlmodel import select

from keel.core.errors import KeelError
from keel.core.monitoring.alerts import evaluate
from keel.core.monitoring.calibration import calibrator_for
from keel.core.monitoring.rules import checks
from keel.core.monitoring.thresholds import flat_metrics, store_points, thresholds
from keel.core.store.engine import unit_of_work
from keel.core.store.models import ModelVersion, PipelineRun
from keel.core.workspace import Workspace

log = logging.getLogger(__name__)


def _estimated(ws: Workspace, production: dict[str, Any]) -> bool:
    return bool(ws.cfg.monitor.estimate and production.get("holdout_dataset_id"))


_CALIBRATION: dict[int, ThreadPoolExecutor] = {}  # per process: a forked child has none of its parent's threads


def start_calibration(ws: Workspace, production: dict[str, Any], dataset_id: str, run_id: str) -> Future[Any] | None:
    """Start fitting the estimate's calibration (:func:`calibrator_for`) in a background thread, for
    :func:`after_scoring` to take. It only reads what earlier runs stored (their labelled predictions, or the
    training holdout), so it can run beside this run's validation, scoring and drift tests: its reads release
    the GIL in SQLite and its fit in numpy, and the machine's other core does them."""
    if not _estimated(ws, production):
        return None
    pid = os.getpid()
    if pid not in _CALIBRATION:
        _CALIBRATION[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-calibration")
    return _CALIBRATION[pid].submit(calibrator_for, ws, production, dataset_id, run_id)


def after_scoring(ws: Workspace, dataset_id: str, production: dict[str, Any], scores: np.ndarray,
                  run_id: str, calibration: Future[Any] | None = None) -> dict[str, Any] | None:
    """Label-free performance estimate (CBPE) of the production model on this batch, stored as metric points.
    ``calibration``: the calibration :func:`start_calibration` started for this run (else it is fitted here)."""
    if not _estimated(ws, production):
        return None
    from keel.core.monitoring.estimate import ESTIMATED, estimate_metrics

    try:
        calibrator, source, calibrated_on = (calibration.result() if calibration is not None
                                             else calibrator_for(ws, production, dataset_id, run_id))
        est = estimate_metrics(np.asarray(scores), calibrator, ws.cfg.monitor.threshold, ws.cfg.monitor.prior_shift)
    except Exception as exc:  # the estimate is advice: it never fails the run, but says why it is missing
        log.warning("label-free estimate failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    limits = thresholds(production.get("train_metrics"), ws.cfg.monitor.max_drop)
    values = {**{k: est[k] for k in ESTIMATED}, "positive_rate": est["expected_positive_rate"]}
    flagged = store_points(ws, production["id"], dataset_id, "estimate", values, run_id, limits)
    return {**est, "method": "cbpe", "calibration": ws.cfg.monitor.calibration,
            "calibration_method": calibrator.method,
            "prior_shift": ws.cfg.monitor.prior_shift, "calibration_source": source,
            "calibration_rows": calibrator.n, "calibrated_on": calibrated_on, "below_threshold": sorted(flagged)}


# --- after every run: thresholds on realised metrics, then the alert rules -----------------------


@unit_of_work
def _version(ws: Workspace, version: int | None) -> ModelVersion | None:
    if version is None:
        return None
    with ws.session() as session:
        return session.exec(select(ModelVersion).where(ModelVersion.model_name == ws.cfg.model,
                                                       ModelVersion.version == version)).first()


@unit_of_work
def after_run(ws: Workspace, run_id: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Set thresholds and alert flags on the run's metric points, then evaluate the alert rules."""
    try:
        with ws.session() as session:
            run = session.get(PipelineRun, run_id)
            dataset_id = summary.get("dataset_version") or (run.batch_id if run else None)
        production = _version(ws, summary.get("production_before"))
        baseline = production.train_metrics if production else None
        importance = production.importance if production else None
        metrics = summary.get("metrics")
        if metrics and production is not None and production.id is not None and dataset_id:
            store_points(ws, production.id, dataset_id, "batch", flat_metrics(metrics), run_id,
                         thresholds(baseline, ws.cfg.monitor.max_drop))
        context = {"batch": summary.get("batch"), "production_version": summary.get("production_before")}
        return evaluate(ws, run_id, dataset_id, checks(summary, baseline, importance, ws.cfg.monitor,
                                                        ws.cfg.alerts), context)
    except KeelError as exc:  # a store that stays unreachable: one line, the run's own error says the rest
        log.warning("monitoring after run %s failed: %s", run_id, exc)
        return []
    except Exception:  # alerting must never turn a finished run into a failed one
        log.exception("monitoring after run %s failed", run_id)
        return []
