"""The calibration behind the label-free estimate: fitted out of time on recent labelled batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlmodel import col, func, select

from keel.core.memo import Memo
from keel.core.store.engine import unit_of_work
from keel.core.store.models import PipelineRun, Prediction
from keel.core.workspace import Workspace

log = logging.getLogger(__name__)


# --- the label-free estimate ---------------------------------------------------------------------


_CALIBRATORS: Memo[Any] = Memo(16)
MIN_CALIBRATION_ROWS = 500  # fewer out-of-time labelled rows than this: the training holdout serves
RECENT_LOOKBACK = 4  # runs looked at per calibration batch wanted (reruns and unlabelled batches skipped)


@unit_of_work
def recent_labelled(ws: Workspace, production: dict[str, Any], dataset_id: str, run_id: str) -> list[tuple[str, int]]:
    """(batch, labelled rows) of the newest batches the production model scored before this run, labels known.

    These are out of time for the model, as production sees it: unlike its training holdout, a random
    share of the newest training batch that shares days (and weather, and congestion) with the rows it
    was fitted on. Labels may have come with the batch or later (`keel labels`).
    """
    found: list[tuple[str, int]] = []
    with ws.session() as session:
        started = session.exec(select(PipelineRun.started_at).where(PipelineRun.id == run_id)).first()
        query = select(PipelineRun.batch_id).where(
            PipelineRun.model_name == ws.cfg.model, PipelineRun.production_before == production["id"],
            col(PipelineRun.batch_id).is_not(None), PipelineRun.batch_id != dataset_id)
        if started is not None:
            query = query.where(PipelineRun.started_at < started)
        # the newest few only: a model whose labels never come must not make every run count them all
        batches = session.exec(query.order_by(col(PipelineRun.started_at).desc())
                               .limit(RECENT_LOOKBACK * ws.cfg.monitor.calibration_batches)).all()
        for batch in dict.fromkeys(batches):
            labelled = session.exec(select(func.count()).select_from(Prediction).where(
                Prediction.dataset_id == batch, Prediction.model_version_id == production["id"],
                col(Prediction.actual).is_not(None))).one()
            if labelled and batch is not None:
                found.append((batch, int(labelled)))
            if len(found) == ws.cfg.monitor.calibration_batches:
                break
    return found


def _fit(ws: Workspace, key: tuple[Any, ...], data: Callable[[], tuple[np.ndarray, np.ndarray]]) -> Any:
    from keel.core.monitoring.estimate import fit_calibrator

    def fitted() -> Any:
        y, scores = data()
        return fit_calibrator(y, scores, ws.cfg.monitor.calibration)

    return _CALIBRATORS.get(key, fitted)


@unit_of_work
def calibrator_for(ws: Workspace, production: dict[str, Any], dataset_id: str,
                   run_id: str) -> tuple[Any, str, list[str]]:
    """The production model's calibration, where it was fitted ("recent" or "holdout"), and on which datasets.

    With ``[monitor] calibrate_on = "recent"`` it is fitted on the model's stored predictions of the
    newest labelled batches it scored (see :func:`recent_labelled`); until there are enough of them,
    and with "holdout", on its training holdout. Fitted once per process and input.
    """
    from keel.core.errors import DataError

    base = (ws.settings.db_url, production["sha256"], ws.cfg.monitor.calibration)
    recent = recent_labelled(ws, production, dataset_id, run_id) if ws.cfg.monitor.calibrate_on == "recent" else []
    if sum(n for _, n in recent) >= MIN_CALIBRATION_ROWS:
        ids = [b for b, _ in recent]
        try:
            return _fit(ws, (*base, tuple(recent)), lambda: calibration_rows(ws, production, "recent", ids)), \
                "recent", ids
        except DataError as exc:  # one class only, say: the holdout serves
            log.info("calibration on recent batches failed (%s): using the training holdout", exc)
    holdout = production["holdout_dataset_id"]
    return _fit(ws, (*base, holdout), lambda: calibration_rows(ws, production, "holdout", [holdout])), \
        "holdout", [holdout]


def calibration_rows(ws: Workspace, production: dict[str, Any], source: str,
                     ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) a calibration from ``source`` is fitted on: the production model's stored, labelled
    predictions of the batches ``ids`` ("recent"), or its scores of its training holdout ("holdout")."""
    from keel.core.data.features import label_array
    from keel.core.pipeline import stages as pipeline

    if source == "recent":
        with ws.session() as session:
            rows = session.exec(select(Prediction.actual, Prediction.score).where(
                col(Prediction.dataset_id).in_(ids), Prediction.model_version_id == production["id"],
                col(Prediction.actual).is_not(None))).all()
        return np.array([r[0] for r in rows], dtype=np.float64), np.array([r[1] for r in rows], dtype=np.float64)
    (holdout,) = ids
    y = label_array(pipeline.load_dataset(ws, holdout), pipeline.spec_of(production))
    return y, pipeline.score(ws, holdout, production, [])
