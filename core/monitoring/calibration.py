"""The calibration behind the label-free estimate: fitted out of time on recent labelled batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlmodel import col, select

from keel.core.memo import Memo
from keel.core.store.engine import unit_of_work
from keel.core.store.models import PipelineRun
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
    return [(batch, int(y.size)) for batch, (y, _) in _recent_rows(ws, production, dataset_id, run_id)]


@unit_of_work
def _recent_rows(ws: Workspace, production: dict[str, Any], dataset_id: str,
                 run_id: str) -> list[tuple[str, tuple[np.ndarray, np.ndarray]]]:
    """:func:`recent_labelled`'s batches with their (labels, scores): each batch's rows are read once, and their
    number is the batch's count (no count query before the read)."""
    found: list[tuple[str, tuple[np.ndarray, np.ndarray]]] = []
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
        conn = session.connection()
        for batch in dict.fromkeys(batches):
            if batch is None:
                continue
            rows = _labelled_predictions(conn, batch, production["id"])
            if rows[0].size:
                found.append((batch, rows))
            if len(found) == ws.cfg.monitor.calibration_batches:
                break
    return found


_LABELLED = text("SELECT p.actual, p.score FROM prediction p WHERE p.set_id = (SELECT s.id FROM prediction_set s "
                 "WHERE s.dataset_id = :dataset_id AND s.model_version_id = :model_version_id) "
                 "AND p.actual IS NOT NULL")


def _labelled_predictions(conn: Any, dataset_id: str, model_version_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of the model's stored predictions of one batch whose label is known, in the order of the
    prediction table's key (row id). The driver's own tuples go into one array: ORM rows cost twice the read itself,
    and SQLAlchemy's rows fetched one by one about as much again."""
    result = conn.execute(_LABELLED, {"dataset_id": dataset_id, "model_version_id": model_version_id})
    try:
        data = np.array(result.cursor.fetchall(), dtype=np.float64).reshape(-1, 2)
    finally:
        result.close()
    return data[:, 0].copy(), data[:, 1].copy()


def _joined(parts: list[tuple[str, tuple[np.ndarray, np.ndarray]]]) -> tuple[np.ndarray, np.ndarray]:
    """The batches' rows as one (labels, scores), batches in the order of their ids: the order the store's key
    gives one query over all of them, so the calibration sees its rows in the same order however they were read."""
    ordered = [rows for _, rows in sorted(parts, key=lambda p: p[0])]
    return np.concatenate([y for y, _ in ordered]), np.concatenate([s for _, s in ordered])


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
    rows = _recent_rows(ws, production, dataset_id, run_id) if ws.cfg.monitor.calibrate_on == "recent" else []
    recent = [(b, int(y.size)) for b, (y, _) in rows]
    if sum(n for _, n in recent) >= MIN_CALIBRATION_ROWS:
        ids = [b for b, _ in recent]
        try:
            return _fit(ws, (*base, tuple(recent)), lambda: _joined(rows)), "recent", ids
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
            conn = session.connection()
            return _joined([(b, _labelled_predictions(conn, b, production["id"])) for b in dict.fromkeys(ids)])
    (holdout,) = ids
    y = label_array(pipeline.load_dataset(ws, holdout), pipeline.spec_of(production))
    return y, pipeline.score(ws, holdout, production, [])
