"""Store writes of a pipeline run: runs, stages, datasets, quarantine, predictions, drift, metrics.

Every write is keyed by a natural key, so writing the same fact twice leaves one row.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlmodel import col, func, select

from keel.core.jsonsafe import json_safe
from keel.core.memo import Memo
from keel.core.store.engine import bulk_insert_ignore, insert_ignore, insert_rows_ignore, raw_transaction, unit_of_work
from keel.core.store.models import (
    AlertCheck,
    Alias,
    DatasetLineage,
    DatasetVersion,
    DriftReport,
    FeatureDrift,
    ModelVersion,
    PipelineRun,
    Quarantine,
    StageRun,
    utcnow,
)
from keel.core.workspace import Workspace


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN and infinities to None."""
    return json_safe(value)


@unit_of_work
def start_run(ws: Workspace, source: str, flow_run_id: str | None, flow: str = "run_pipeline",
              code_hash: str | None = None) -> str:
    """A new run row; a flow run that comes back (resumed after a suspension) keeps the row it had. `code_hash`
    is the keel code the run runs (keel.core.pipeline.code.pipeline_digest)."""
    if flow_run_id is not None:
        with ws.session() as session:
            found = session.exec(select(PipelineRun).where(PipelineRun.flow_run_id == flow_run_id,
                                                           PipelineRun.flow == flow)).first()
            if found is not None:
                found.status = "running"
                session.add(found)
                return found.id
    run_id = str(uuid.uuid4())
    with ws.session() as session:
        session.add(PipelineRun(id=run_id, flow_run_id=flow_run_id, flow=flow, model_name=ws.cfg.model,
                                source=source, config_hash=ws.cfg.config_hash(), code_hash=code_hash))
    return run_id


@unit_of_work
def update_run(ws: Workspace, run_id: str, **fields: Any) -> None:
    with ws.session() as session:
        run = session.get(PipelineRun, run_id)
        assert run is not None
        for key, value in fields.items():
            setattr(run, key, clean(value) if isinstance(value, dict | list) else value)
        session.add(run)


def finish_run(ws: Workspace, run_id: str, status: str, **fields: Any) -> None:
    update_run(ws, run_id, status=status, finished_at=utcnow(), **fields)


@unit_of_work
def record_stage(ws: Workspace, run_id: str, name: str, status: str, cached: bool, duration_ms: float,
                 detail: dict[str, Any] | None = None) -> None:
    with ws.session() as session:
        insert_ignore(session, StageRun, [{
            "run_id": run_id, "name": name, "status": status, "cached": cached,
            "duration_ms": duration_ms, "detail": clean(detail), "started_at": utcnow(),
        }])


@unit_of_work
def register_dataset(ws: Workspace, row: dict[str, Any], parents: list[str] = ()) -> None:  # type: ignore[assignment]
    with ws.session() as session:
        insert_ignore(session, DatasetVersion, [{**row, "created_at": utcnow()}])
        insert_ignore(session, DatasetLineage, [{"parent_id": p, "child_id": row["id"]} for p in parents])


def store_missing(ws: Workspace) -> bool:
    """Whether the workspace's store is a SQLite file that does not exist yet: nothing to find there, and a check
    before a run must not create it (opening a store migrates it)."""
    url = make_url(ws.settings.db_url)
    return url.get_backend_name() == "sqlite" and not (url.database and url.database != ":memory:"
                                                      and Path(url.database).exists())


@unit_of_work
def has_production(ws: Workspace) -> bool:
    """Whether the workspace's model has a production version. A SQLite store that does not exist yet has none
    and is not created by asking: a check before a run writes nothing."""
    if store_missing(ws):
        return False
    with ws.session() as session:
        return session.get(Alias, (ws.cfg.model, "production")) is not None


@unit_of_work
def completed_run(ws: Workspace, batch_id: str) -> PipelineRun | None:
    """The first run that finished this batch for this model under this configuration."""
    with ws.session() as session:
        return session.exec(
            select(PipelineRun).where(
                PipelineRun.model_name == ws.cfg.model, PipelineRun.batch_id == batch_id,
                PipelineRun.config_hash == ws.cfg.config_hash(), PipelineRun.replay_of == None,  # noqa: E711
                col(PipelineRun.status).in_(("completed", "quarantined")),
            ).order_by(col(PipelineRun.started_at))
        ).first()


@unit_of_work
def unfinished_run(ws: Workspace, batch_id: str, current: str) -> PipelineRun | None:
    """The first run of this batch that was killed mid-way (still 'running'), other than ``current``."""
    with ws.session() as session:
        return session.exec(
            select(PipelineRun).where(
                PipelineRun.model_name == ws.cfg.model, PipelineRun.batch_id == batch_id,
                PipelineRun.config_hash == ws.cfg.config_hash(), PipelineRun.replay_of == None,  # noqa: E711
                PipelineRun.status == "running", PipelineRun.id != current,
            ).order_by(col(PipelineRun.started_at))
        ).first()


@unit_of_work
def take_over_checks(ws: Workspace, batch_id: str, current: str) -> None:
    """A run restarted after its batch's run was killed carries on from it: the killed runs' alert checks become
    its own, so each rule is checked once per batch and a rule that fired is not counted twice towards its
    k-of-n or its cool-down (nor fired again)."""
    with ws.session() as session:
        mine = set(session.exec(select(AlertCheck.rule).where(AlertCheck.run_id == current)))
        killed = select(PipelineRun.id).where(PipelineRun.model_name == ws.cfg.model, PipelineRun.batch_id == batch_id,
                                              PipelineRun.status == "running", PipelineRun.id != current)
        for check in session.exec(select(AlertCheck).where(col(AlertCheck.run_id).in_(killed))
                                  .order_by(col(AlertCheck.id))):
            if check.rule in mine:  # two killed runs checked it: the first check stands
                session.delete(check)
                continue
            check.run_id = current
            mine.add(check.rule)
            session.add(check)


@unit_of_work
def abandon_unfinished(ws: Workspace, batch_id: str, source: str, finished: str) -> None:
    """Mark killed runs of a batch 'abandoned' once another run of it has finished."""
    same_batch = (PipelineRun.batch_id == batch_id) | ((PipelineRun.batch_id == None) & (PipelineRun.source == source))  # noqa: E711
    with ws.session() as session:
        for run in session.exec(select(PipelineRun).where(
                PipelineRun.model_name == ws.cfg.model, same_batch,
                PipelineRun.status == "running", PipelineRun.id != finished)):
            run.status, run.error = "abandoned", f"interrupted; finished by run {finished}"
            session.add(run)


@unit_of_work
def record_quarantine(ws: Workspace, dataset_id: str, bad: list[tuple[int, str]], ids: list[str] | None,
                      batch_reason: str | None) -> None:
    rows = [{"dataset_id": dataset_id, "row_index": i, "row_id": ids[i] if ids else None, "reason": r,
             "whole_batch": False, "replayed": False, "created_at": utcnow()} for i, r in bad]
    if batch_reason:
        rows.append({"dataset_id": dataset_id, "row_index": -1, "row_id": None, "reason": batch_reason,
                     "whole_batch": True, "replayed": False, "created_at": utcnow()})
    with ws.session() as session:
        for start in range(0, len(rows), 5000):
            insert_ignore(session, Quarantine, rows[start:start + 5000])


@unit_of_work
def quarantined_rows(ws: Workspace, dataset_id: str) -> list[int]:
    with ws.session() as session:
        return list(session.exec(
            select(Quarantine.row_index).where(Quarantine.dataset_id == dataset_id, Quarantine.row_index >= 0)
        ).all())


PREDICTION_CHUNK = 50_000


@unit_of_work
def record_predictions(ws: Workspace, dataset_id: str, model_version_id: int, ids: Sequence[str] | pl.Series,
                       scores: np.ndarray, actual: np.ndarray, threshold: float, run_id: str) -> None:
    """The set (dataset, model version, run) and one row per scored row, in one transaction. A set written before
    keeps its rows and run: the same prediction written twice is one row. The rows are made PREDICTION_CHUNK at a
    time as the driver takes them (afresh if the write is retried), so a 10M-row batch never exists as 10M Python
    tuples at once."""
    if not len(ids) == len(scores) == len(actual):
        raise ValueError(f"{len(ids)} ids, {len(scores)} scores and {len(actual)} labels do not line up")
    dialect = ws.engine.dialect.name
    mark = "?" if dialect == "sqlite" else "%s"
    with raw_transaction(ws.engine) as cur:
        insert_rows_ignore(cur, dialect, "prediction_set", ("dataset_id", "model_version_id", "run_id"),
                           [(dataset_id, model_version_id, run_id)])
        cur.execute(f"SELECT id FROM prediction_set WHERE dataset_id = {mark} AND model_version_id = {mark}",
                    (dataset_id, model_version_id))
        set_id = cur.fetchone()[0]

        def rows() -> Iterator[tuple[Any, ...]]:
            for start in range(0, len(scores), PREDICTION_CHUNK):
                part = slice(start, start + PREDICTION_CHUNK)
                chunk = ids[part]
                names = chunk.to_list() if isinstance(chunk, pl.Series) else list(chunk)
                s = scores[part]
                labels = (s >= threshold).astype(int).tolist()
                act = [None if math.isnan(a) else int(a) for a in actual[part].tolist()]
                yield from zip(repeat(set_id), names, s.tolist(), labels, act)

        insert_rows_ignore(cur, dialect, "prediction", ("set_id", "row_id", "score", "label", "actual"), rows())


@unit_of_work
def record_drift(ws: Workspace, dataset_id: str, reference_id: str, settings_hash: str, run_id: str,
                 report: dict[str, Any]) -> None:
    with ws.session() as session:
        existing = session.exec(select(DriftReport).where(
            DriftReport.dataset_id == dataset_id, DriftReport.reference_id == reference_id,
            DriftReport.settings_hash == settings_hash)).first()
        if existing is not None:
            return
        features = report.get("features", [])
        row = DriftReport(dataset_id=dataset_id, reference_id=reference_id, settings_hash=settings_hash,
                          run_id=run_id, engine=report.get("engine", ""), detected=bool(report.get("detected")),
                          n_drifted=sum(1 for f in features if f.get("drifted")),
                          summary=clean({k: v for k, v in report.items() if k != "features"}))
        session.add(row)
        session.flush()
        keys = {"name", "kind", "test", "statistic", "p_value", "p_corrected", "effect_size", "effect_metric",
                "drifted", "importance_rank"}
        session.add_all([
            FeatureDrift(report_id=row.id or 0, feature=f["name"], kind=f.get("kind", ""), test=f.get("test", ""),
                         statistic=f.get("statistic"), p_value=f.get("p_value"), p_corrected=f.get("p_corrected"),
                         effect_size=f.get("effect_size"), effect_metric=f.get("effect_metric"),
                         drifted=bool(f.get("drifted")), importance_rank=f.get("importance_rank"),
                         detail=clean({k: v for k, v in f.items() if k not in keys}))
            for f in features
        ])


def record_metrics(ws: Workspace, model_version_id: int, dataset_id: str, scope: str, metrics: dict[str, Any],
                   run_id: str | None, thresholds: dict[str, tuple[float | None, float | None]] | None = None,
                   alerts: set[str] | None = None) -> None:
    thresholds, alerts = thresholds or {}, alerts or set()
    rows = []
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) and value is not None:
            continue
        lo, hi = thresholds.get(name, (None, None))
        rows.append({"model_name": ws.cfg.model, "model_version_id": model_version_id, "dataset_id": dataset_id,
                     "run_id": run_id, "scope": scope, "name": name, "value": clean(value), "lower": lo, "upper": hi,
                     "alert": name in alerts})
    log_metric_points(ws, rows)


METRIC_COLUMNS = ("model_name", "model_version_id", "dataset_id", "run_id", "scope", "name", "value", "lower",
                  "upper", "alert", "at", "batch_time")


def _stamp(at: Any) -> Any:
    """A datetime as the store keeps it: naive UTC on SQLite, aware elsewhere (naive input is UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


_BATCH_TIMES: Memo[Any] = Memo(10_000)  # dataset versions are immutable: their times never change


@unit_of_work
def batch_times(ws: Workspace, dataset_ids: set[str]) -> dict[str, Any]:
    """The latest timestamp of each dataset's data (None where it has no timestamp column or no row)."""
    db = ws.settings.db_url
    missing = sorted(d for d in dataset_ids if (db, d) not in _BATCH_TIMES)
    found: dict[str, Any] = {}
    if missing:
        with ws.session() as session:
            for start in range(0, len(missing), 500):
                found.update(session.exec(select(DatasetVersion.id, DatasetVersion.data_to).where(
                    col(DatasetVersion.id).in_(missing[start:start + 500]))).all())
    for d, t in found.items():  # ids not in the store are asked again next time
        _BATCH_TIMES.put((db, d), t)
    return {d: found[d] if d in found else _BATCH_TIMES.lookup((db, d)) for d in dataset_ids}


def log_metric_points(ws: Workspace, rows: list[dict[str, Any]]) -> int:
    """Bulk-log metric points in one transaction (existing keys are kept); returns how many were given."""
    sqlite = ws.engine.dialect.name == "sqlite"
    now = utcnow()
    default_at = _stamp(now) if sqlite else now

    stamps: dict[Any, Any] = {}  # points of one batch share their time: format it once

    def when(at: Any) -> Any:
        if at is None:
            return default_at
        if not sqlite:
            return at
        if at not in stamps:
            stamps[at] = _stamp(at)
        return stamps[at]

    data_times = {d: (None if t is None else when(t)) for d, t in batch_times(ws, {r["dataset_id"] for r in rows}).items()}

    params = [  # one comprehension, no call per row: this is the path of hundreds of thousands of points
        (r["model_name"], r["model_version_id"], (d := r["dataset_id"]), r.get("run_id"), r["scope"], r["name"],
         None if (v := r.get("value")) is None or v != v else float(v), r.get("lower"), r.get("upper"),
         bool(r.get("alert")), default_at if (a := r.get("at")) is None else when(a), data_times[d])
        for r in rows
    ]
    bulk_insert_ignore(ws.engine, "metric_point", METRIC_COLUMNS, params)
    return len(rows)


@unit_of_work
def register_model(ws: Workspace, fields: dict[str, Any]) -> ModelVersion:
    """Find the model version with these natural keys, or add it with the next version number."""
    key = (ModelVersion.model_name == fields["model_name"],
           ModelVersion.train_dataset_id == fields["train_dataset_id"],
           ModelVersion.params_hash == fields["params_hash"], ModelVersion.code_hash == fields["code_hash"])
    for _ in range(5):
        with ws.session() as session:
            found = session.exec(select(ModelVersion).where(*key)).first()
            if found is not None:
                return found
        try:
            with ws.session() as session:
                top = session.exec(select(func.max(ModelVersion.version)).where(
                    ModelVersion.model_name == fields["model_name"])).one()
                mv = ModelVersion(**clean(fields), version=(top or 0) + 1)
                session.add(mv)
                session.flush()
                session.refresh(mv)
                return mv
        except SAIntegrityError:
            continue  # another writer took the number or the natural key: look again
    raise RuntimeError("could not register the model version")  # pragma: no cover
