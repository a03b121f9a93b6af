"""Lineage queries: what was in production when and why, where a model came from, and trace of a prediction."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from keel.core.errors import NotFound, UsageError
from keel.core.registry.transactions import SWITCHES
from keel.core.store.engine import unit_of_work
from keel.core.store.models import (
    Alias,
    AuditEvent,
    DatasetLineage,
    DatasetVersion,
    MetricPoint,
    ModelVersion,
    PipelineRun,
    Prediction,
    PredictionSet,
    Review,
    ReviewDecision,
    StageRun,
)


def as_utc(at: datetime | None) -> datetime | None:
    """Store times are zoned UTC; a zoned time is converted, a naive one taken as UTC."""
    if at is None:
        return None
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def parse_time(text: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))  # type: ignore[return-value]
    except ValueError:
        raise UsageError(f"'{text}' is not a time: use ISO 8601, e.g. 2026-11-29T14:05:00Z") from None


def _event(e: AuditEvent) -> dict[str, Any]:
    return {"event_id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "version": e.version,
            "reason": e.reason, "details": e.details}


@unit_of_work
def history(engine: Engine, model: str, at: datetime | None = None) -> list[dict[str, Any]]:
    """Production periods of ``model``, oldest first: version, from, until, and the event that started it.

    With ``at``, only the period covering that moment (empty when nothing served then).
    """
    with Session(engine) as session:
        events = list(session.exec(select(AuditEvent).where(AuditEvent.model_name == model,
                                                            col(AuditEvent.action).in_(SWITCHES))
                                   .order_by(col(AuditEvent.id))))
    periods = []
    for i, e in enumerate(events):
        until = events[i + 1].at if i + 1 < len(events) else None
        periods.append({"version": e.version, "from": e.at, "until": until, **_event(e)})
    if at is None:
        return periods
    at = as_utc(at)
    return [p for p in periods if p["from"] <= at and (p["until"] is None or at < p["until"])]


def _dataset(session: Session, dataset_id: str | None) -> dict[str, Any] | None:
    if dataset_id is None:
        return None
    dv = session.get(DatasetVersion, dataset_id)
    if dv is None:
        return {"id": dataset_id, "missing": True}
    parents = session.exec(select(DatasetVersion).join(DatasetLineage, col(DatasetLineage.parent_id) == DatasetVersion.id)
                           .where(DatasetLineage.child_id == dataset_id)).all()
    return {"id": dv.id, "kind": dv.kind, "rows": dv.rows, "source": dv.source, "artifact": dv.artifact_uri,
            "parents": [{"id": p.id, "kind": p.kind, "rows": p.rows, "source": p.source} for p in parents]}


def _run(session: Session, run_id: str | None) -> dict[str, Any] | None:
    run = session.get(PipelineRun, run_id) if run_id else None
    if run is None:
        return None
    gate = session.exec(select(StageRun).where(StageRun.run_id == run.id, StageRun.name == "gate")).first()
    return {"run_id": run.id, "flow": run.flow, "flow_run_id": run.flow_run_id, "source": run.source,
            "batch": run.batch_id, "status": run.status, "decision": run.decision, "reasons": run.reasons,
            "policy_hash": (gate.detail or {}).get("policy_hash") if gate else None,
            "config_hash": run.config_hash, "started_at": run.started_at, "finished_at": run.finished_at}


def _version(session: Session, model: str, version: int) -> ModelVersion:
    mv = session.exec(select(ModelVersion).where(ModelVersion.model_name == model,
                                                 ModelVersion.version == version)).first()
    if mv is None:
        raise NotFound(f"model '{model}' has no version {version}")
    return mv


@unit_of_work
def lineage(engine: Engine, model: str, version: int) -> dict[str, Any]:
    """Where a model version came from and what was decided about it, by whom."""
    with Session(engine) as session:
        mv = _version(session, model, version)
        metrics = session.exec(select(MetricPoint).where(MetricPoint.model_version_id == mv.id)
                               .order_by(col(MetricPoint.id))).all()
        review = session.exec(select(Review).where(Review.candidate_version_id == mv.id)).first()
        votes = session.exec(select(ReviewDecision).where(ReviewDecision.review_id == review.id)).all() if review else []
        events = session.exec(select(AuditEvent).where(AuditEvent.model_name == model, AuditEvent.version == version)
                              .order_by(col(AuditEvent.id))).all()
        out = {
            "model": model, "version": version, "status": mv.status, "created_at": mv.created_at,
            "aliases": sorted(a.alias for a in session.exec(select(Alias).where(Alias.model_version_id == mv.id))),
            "holdout_metrics": {k: v for k, v in (mv.train_metrics or {}).items()
                                if isinstance(v, int | float) and not isinstance(v, bool)},
            "artifact": {"sha256": mv.artifact_sha256, "uri": mv.artifact_uri},
            "run": _run(session, mv.run_id),
            "train_dataset": _dataset(session, mv.train_dataset_id),
            "holdout_dataset": _dataset(session, mv.holdout_dataset_id),
            "params": mv.params, "params_hash": mv.params_hash, "num_boost_round": mv.num_boost_round,
            "code_hash": mv.code_hash, "features": mv.features,
            "metrics": [{"scope": m.scope, "dataset": m.dataset_id, "name": m.name, "value": m.value,
                         "lower": m.lower, "upper": m.upper} for m in metrics],
            "review": None if review is None else {
                "review_id": review.id, "status": review.status, "reasons": review.reasons,
                "required_approvals": review.required_approvals,
                "decisions": [{"actor": v.actor, "decision": v.decision, "reason": v.reason, "at": v.at} for v in votes]},
            "decisions": [_event(e) for e in events],
        }
    out["production_periods"] = [p for p in history(engine, model) if p["version"] == version]
    return out


def _resolve_batch(session: Session, batch: str) -> str:
    path = Path(batch)
    if path.is_file():
        from keel.core.data.batches import sha256_file

        return sha256_file(path)
    found = session.exec(select(DatasetVersion.id).where(col(DatasetVersion.id).startswith(batch))).all()
    if not found:
        raise NotFound(f"no dataset version or batch file matches '{batch}'")
    if len(found) > 1:
        raise UsageError(f"'{batch}' matches {len(found)} dataset versions; give more of the hash")
    return found[0]


def _put_in_production(session: Session, mv: ModelVersion, before: datetime | None) -> dict[str, Any] | None:
    query = select(AuditEvent).where(AuditEvent.model_name == mv.model_name, AuditEvent.version == mv.version,
                                     col(AuditEvent.action).in_(SWITCHES)).order_by(col(AuditEvent.id).desc())
    events = list(session.exec(query))
    before = as_utc(before)
    chosen = next((e for e in events if before is None or e.at <= before), events[0] if events else None)
    if chosen is None:
        return None
    out = _event(chosen)
    review_id = (chosen.details or {}).get("review_id")
    if review_id:
        out["approvals"] = [{"actor": v.actor, "reason": v.reason, "at": v.at} for v in session.exec(
            select(ReviewDecision).where(ReviewDecision.review_id == review_id, ReviewDecision.decision == "approve"))]
    return out


@unit_of_work
def trace(engine: Engine, row_id: str, batch: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Every stored prediction for ``row_id``: model version, its training data, the runs and the approval."""
    with Session(engine) as session:
        query = (select(Prediction, PredictionSet).join(PredictionSet, col(PredictionSet.id) == col(Prediction.set_id))
                 .where(Prediction.row_id == str(row_id)))
        if batch:
            query = query.where(PredictionSet.dataset_id == _resolve_batch(session, batch))
        preds = session.exec(query.order_by(col(PredictionSet.id)).limit(limit)).all()
        if not preds:
            where = f" in batch {batch}" if batch else ""
            raise NotFound(f"no prediction for row '{row_id}'{where}")
        out = []
        for p, s in preds:
            mv = session.get(ModelVersion, s.model_version_id)
            assert mv is not None
            scored_by = _run(session, s.run_id)
            out.append({
                "row_id": p.row_id, "score": p.score, "label": p.label, "actual": p.actual,
                "batch": _dataset(session, s.dataset_id),
                "prediction_run": scored_by,
                "model": {"name": mv.model_name, "version": mv.version, "status": mv.status,
                          "sha256": mv.artifact_sha256, "params_hash": mv.params_hash, "code_hash": mv.code_hash},
                "training_data": _dataset(session, mv.train_dataset_id),
                "training_run": _run(session, mv.run_id),
                "approval": _put_in_production(session, mv, scored_by["started_at"] if scored_by else None),
            })
        return out
