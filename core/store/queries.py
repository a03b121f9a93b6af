"""Read-side queries shared by the CLI and the TUI; everything pages through the store.

Every list takes ``limit``/``offset`` and comes with a capped count ("500 of >500"), so no screen
ever loads a whole table. Rows come back as plain dicts, ready to print or render.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any

from sqlalchemy import case, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from keel.core.store.engine import unit_of_work
from keel.core.store.models import (
    Alert,
    Alias,
    AuditEvent,
    DatasetLineage,
    DatasetVersion,
    DriftReport,
    FeatureDrift,
    MetricPoint,
    ModelVersion,
    PipelineRun,
    Quarantine,
    Review,
    ReviewDecision,
    StageRun,
)

COUNT_CAP = 500
PRODUCTION_ACTIONS = ("promote", "promote:auto", "rollback")  # audit actions that move the production alias


def capped_count(session: Session, query: Any, cap: int = COUNT_CAP) -> tuple[int, bool]:
    """Count the rows of ``query`` up to ``cap``: (count, more) where more means "over cap"."""
    sub = query.limit(cap + 1).subquery()
    n = session.exec(select(func.count()).select_from(sub)).one()
    return min(n, cap), n > cap


def _page(rows: list[dict[str, Any]], total: int, more: bool, offset: int) -> dict[str, Any]:
    return {"rows": rows, "total": total, "more": more, "offset": offset}


def _batch_name(source: str | None) -> str:
    return PurePath(source).name if source else "-"


# --- runs ------------------------------------------------------------------------------------------


def _run_query(model: str | None, text: str | None) -> Any:
    query = select(PipelineRun)
    if model:
        query = query.where(PipelineRun.model_name == model)
    if text:
        like = f"%{text}%"
        query = query.where(or_(col(PipelineRun.source).ilike(like), col(PipelineRun.status).ilike(like),
                                col(PipelineRun.decision).ilike(like), col(PipelineRun.model_name).ilike(like),
                                col(PipelineRun.id).ilike(f"{text}%")))
    return query


def _run_row(run: PipelineRun) -> dict[str, Any]:
    s = run.summary or {}
    drift = s.get("drift") or {}
    return {
        "run_id": run.id, "flow_run_id": run.flow_run_id, "model": run.model_name, "source": run.source,
        "batch": _batch_name(run.source), "dataset_version": run.batch_id, "status": run.status,
        "decision": run.decision, "drifted": len(drift.get("drifted") or []), "metrics": s.get("metrics"),
        "model_version": s.get("model_version"), "production_version": s.get("production_version"),
        "replay_of": run.replay_of, "started_at": run.started_at, "finished_at": run.finished_at,
        "error": run.error,
    }


@unit_of_work
def list_runs(engine: Engine, model: str | None = None, limit: int = 50, offset: int = 0,
              text: str | None = None) -> list[dict[str, Any]]:
    """Runs, newest first; ``text`` filters on batch, status, decision, model or run-id prefix."""
    with Session(engine) as session:
        query = _run_query(model, text).order_by(col(PipelineRun.started_at).desc()).offset(offset).limit(limit)
        return [_run_row(run) for run in session.exec(query)]


@unit_of_work
def runs_page(engine: Engine, model: str | None = None, limit: int = 100, offset: int = 0,
              text: str | None = None) -> dict[str, Any]:
    """One page of runs with the capped count of all that match."""
    rows = list_runs(engine, model, limit, offset, text)
    with Session(engine) as session:
        total, more = capped_count(session, _run_query(model, text).with_only_columns(PipelineRun.id),
                                   max(COUNT_CAP, offset + limit))
    return _page(rows, total, more, offset)


@unit_of_work
def run_detail(engine: Engine, run_id: str, quarantine_limit: int = 50) -> dict[str, Any]:
    """One run: stages, contract result and quarantined rows, per-feature drift, metrics, alerts."""
    from keel.core.errors import NotFound

    with Session(engine) as session:
        run = session.get(PipelineRun, run_id)
        if run is None:
            run = session.exec(select(PipelineRun).where(col(PipelineRun.id).startswith(run_id))).first()
        if run is None:
            raise NotFound(f"no run {run_id}")
        out = _run_row(run)
        out["reasons"] = run.reasons or []
        stages = list(session.exec(select(StageRun).where(StageRun.run_id == run.id).order_by(col(StageRun.id))))
        out["stages"] = [{"name": s.name, "status": s.status, "cached": s.cached, "duration_ms": s.duration_ms,
                          "detail": s.detail or {}} for s in stages]
        validate = next((s.detail for s in stages if s.name == "validate"), None) or {}
        out["contract"] = validate
        batch = run.batch_id
        q_query = select(Quarantine).where(Quarantine.dataset_id == batch) if batch else None
        if q_query is not None:
            q_total, q_more = capped_count(session, q_query.with_only_columns(col(Quarantine.id)), 100_000)
            q_rows = session.exec(q_query.order_by(col(Quarantine.whole_batch).desc(), col(Quarantine.row_index))
                                  .limit(quarantine_limit)).all()
        else:
            q_total, q_more, q_rows = 0, False, []
        out["quarantine"] = {"total": q_total, "more": q_more, "rows": [
            {"row_index": q.row_index, "row_id": q.row_id, "reason": q.reason, "whole_batch": q.whole_batch}
            for q in q_rows]}
        out["drift"] = _drift_of(session, batch, run.id)
        # the run's own summary holds its monitor metrics (metric_point has no run_id index to search by)
        metrics = {k: v for k, v in (out["metrics"] or {}).items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        out["metric_values"] = metrics
        out["confusion"] = (out["metrics"] or {}).get("confusion")
        alert_query = select(Alert).where(Alert.run_id == run.id)
        if batch:
            alert_query = select(Alert).where(or_(col(Alert.run_id) == run.id, col(Alert.dataset_id) == batch))
        out["alerts"] = [alert_row(a) for a in session.exec(alert_query.order_by(col(Alert.id)).limit(50))]
        return out


def _drift_of(session: Session, dataset_id: str | None, run_id: str | None) -> dict[str, Any] | None:
    if not dataset_id:
        return None
    query = select(DriftReport).where(DriftReport.dataset_id == dataset_id)
    report = None
    if run_id:
        report = session.exec(query.where(DriftReport.run_id == run_id)).first()
    report = report or session.exec(query.order_by(col(DriftReport.id).desc())).first()
    if report is None:
        return None
    features = session.exec(select(FeatureDrift).where(FeatureDrift.report_id == report.id)).all()
    rank = {f.feature: (f.importance_rank if f.importance_rank is not None else 10**6) for f in features}
    return {"engine": report.engine, "detected": report.detected, "n_drifted": report.n_drifted,
            "reference_id": report.reference_id, "summary": report.summary or {},
            "features": [{"feature": f.feature, "kind": f.kind, "test": f.test, "statistic": f.statistic,
                          "p_value": f.p_value, "p_corrected": f.p_corrected, "effect_size": f.effect_size,
                          "effect_metric": f.effect_metric, "drifted": f.drifted, "importance_rank": f.importance_rank,
                          "detail": f.detail or {}}
                         for f in sorted(features, key=lambda f: (not f.drifted, rank[f.feature], f.feature))]}


# --- models ----------------------------------------------------------------------------------------


def _aliases(session: Session, model: str | None = None) -> dict[int, list[str]]:
    query = select(Alias) if not model else select(Alias).where(Alias.model_name == model)
    aliases: dict[int, list[str]] = {}
    for alias in session.exec(query):
        aliases.setdefault(alias.model_version_id, []).append(alias.alias)
    return aliases


def _version_row(mv: ModelVersion, aliases: dict[int, list[str]]) -> dict[str, Any]:
    return {
        "name": mv.model_name, "version": mv.version, "status": mv.status, "aliases": aliases.get(mv.id or 0, []),
        "metrics": {k: v for k, v in (mv.train_metrics or {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)},
        "artifact_sha256": mv.artifact_sha256, "train_dataset": mv.train_dataset_id,
        "holdout_dataset": mv.holdout_dataset_id, "run_id": mv.run_id, "created_at": mv.created_at,
    }


@unit_of_work
def list_models(engine: Engine, model: str | None = None, limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
    """Model versions with status, aliases and holdout metrics, newest first."""
    with Session(engine) as session:
        query = select(ModelVersion).order_by(col(ModelVersion.model_name), col(ModelVersion.version).desc())
        if model:
            query = query.where(ModelVersion.model_name == model)
        versions = list(session.exec(query.offset(offset).limit(limit)))
        aliases = _aliases(session, model)
        return [_version_row(mv, aliases) for mv in versions]


@unit_of_work
def models_page(engine: Engine, model: str | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    rows = list_models(engine, model, limit, offset)
    with Session(engine) as session:
        query = select(ModelVersion.id)
        if model:
            query = query.where(ModelVersion.model_name == model)
        total, more = capped_count(session, query, max(COUNT_CAP, offset + limit))
    return _page(rows, total, more, offset)


@unit_of_work
def production_state(engine: Engine, model: str) -> dict[str, Any]:
    """The production version of ``model`` and the one a default rollback returns to (the registry's answer)."""
    from keel.core.registry.transactions import rollback_target

    with Session(engine) as session:
        alias = session.get(Alias, (model, "production"))
        if alias is None:
            return {"model": model, "production": None, "previous": None, "revision": 0}
        cur = session.get(ModelVersion, alias.model_version_id)
        return {"model": model, "production": cur.version if cur else None,
                "previous": rollback_target(session, model, alias), "revision": alias.revision}


def _event_row(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "model": e.model_name,
            "version": e.version, "reason": e.reason, "details": e.details or {}}


@unit_of_work
def production_history(engine: Engine, model: str, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Who put which version in production, when and why, newest first (from the audit log)."""
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.model_name == model,
                                                       col(AuditEvent.action).in_(PRODUCTION_ACTIONS))
                              .order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit))
        return [_event_row(e) for e in events]


def _dataset_row(session: Session, dataset_id: str | None) -> dict[str, Any] | None:
    if not dataset_id:
        return None
    dv = session.get(DatasetVersion, dataset_id)
    if dv is None:
        return {"id": dataset_id, "kind": "?", "rows": None, "source": None, "parents": []}
    parents = session.exec(select(DatasetVersion).join(DatasetLineage, col(DatasetLineage.parent_id) == DatasetVersion.id)
                           .where(DatasetLineage.child_id == dataset_id)).all()
    return {"id": dv.id, "kind": dv.kind, "rows": dv.rows, "source": dv.source, "created_at": dv.created_at,
            "parents": [{"id": p.id, "source": _batch_name(p.source), "rows": p.rows} for p in parents]}


# --- reviews and compare ---------------------------------------------------------------------------


def _versions_by_id(session: Session, ids: set[int]) -> dict[int, ModelVersion]:
    if not ids:
        return {}
    return {mv.id or 0: mv for mv in session.exec(select(ModelVersion).where(col(ModelVersion.id).in_(ids)))}


@unit_of_work
def reviews_page(engine: Engine, status: str | None = "open", model: str | None = None, limit: int = 100,
                 offset: int = 0) -> dict[str, Any]:
    """Reviews (the open inbox by default), newest first: candidate, production, reasons, the comparison and the
    votes so far. `keel reviews` and the TUI's reviews view both read this."""
    with Session(engine) as session:
        query = select(Review)
        if status:
            query = query.where(Review.status == status)
        if model:
            query = query.where(Review.model_name == model)
        reviews = list(session.exec(query.order_by(col(Review.id).desc()).offset(offset).limit(limit)))
        total, more = capped_count(session, query.with_only_columns(col(Review.id)), max(COUNT_CAP, offset + limit))
        ids = {r.candidate_version_id for r in reviews} | {r.production_version_id for r in reviews
                                                             if r.production_version_id}
        versions = _versions_by_id(session, ids)
        votes: dict[int, list[dict[str, Any]]] = {}
        if reviews:
            for d in session.exec(select(ReviewDecision).where(col(ReviewDecision.review_id).in_([r.id for r in reviews]))
                                  .order_by(col(ReviewDecision.at))):
                votes.setdefault(d.review_id, []).append(
                    {"actor": d.actor, "decision": d.decision, "reason": d.reason, "at": d.at})
        rows = [{"review_id": r.id, "model": r.model_name,
                 "candidate_version": versions[r.candidate_version_id].version,
                 "production_version": versions[r.production_version_id].version if r.production_version_id else None,
                 "status": r.status, "reasons": r.reasons or [], "comparison": r.comparison, "run_id": r.run_id,
                 "required_approvals": r.required_approvals, "decisions": votes.get(r.id or 0, []),
                 "created_at": r.created_at, "decided_at": r.decided_at} for r in reviews]
        return _page(rows, total, more, offset)


@unit_of_work
def compare(engine: Engine, model: str | None = None, candidate: int | None = None) -> dict[str, Any] | None:
    """Candidate against production from the stored review: metric deltas with CIs, confusion matrices,
    churn, the drift of the batch they were judged on, and the gate's reasons.

    Without arguments: the newest open review (else the newest review). None when there is none.
    """
    with Session(engine) as session:
        query = select(Review)
        if model:
            query = query.where(Review.model_name == model)
        mv = None
        if candidate is not None and model:
            mv = session.exec(select(ModelVersion).where(ModelVersion.model_name == model,
                                                         ModelVersion.version == candidate)).first()
            review = session.exec(query.where(Review.candidate_version_id == (mv.id if mv else -1))).first()
        else:
            review = (session.exec(query.where(Review.status == "open").order_by(col(Review.id).desc())).first()
                      or session.exec(query.order_by(col(Review.id).desc())).first())
        if review is not None:
            versions = _versions_by_id(session, {review.candidate_version_id, review.production_version_id or 0})
            cand, prod = versions[review.candidate_version_id], versions.get(review.production_version_id or 0)
            comp, run = review.comparison or {}, session.get(PipelineRun, review.run_id) if review.run_id else None
            head = {"review_id": review.id, "model": review.model_name, "status": review.status,
                    "reasons": review.reasons or (run.reasons if run else None) or []}
        elif mv is not None:  # judged without a review (promoted or rejected by the gate): the run's record
            cand, run = mv, session.get(PipelineRun, mv.run_id) if mv.run_id else None
            summary = (run.summary if run else None) or {}
            comp = summary.get("evaluation") or {}
            prod_v = summary.get("production_before")
            prod = session.exec(select(ModelVersion).where(ModelVersion.model_name == mv.model_name,
                                                           ModelVersion.version == prod_v)).first() if prod_v else None
            head = {"review_id": None, "model": mv.model_name, "status": mv.status,
                    "reasons": (run.reasons if run else None) or []}
        else:
            return None
        cm = comp.get("candidate_metrics") or cand.train_metrics or {}
        pm = comp.get("production_metrics") or {}
        return {
            **head, "candidate": cand.version, "production": prod.version if prod else None,
            "metrics": [{"metric": k, **v} for k, v in (comp.get("metrics") or {}).items()],
            "churn": comp.get("churn"), "n": comp.get("n"), "alpha": comp.get("alpha"),
            "candidate_confusion": cm.get("confusion"), "production_confusion": pm.get("confusion"),
            "run_id": run.id if run else None, "batch": _batch_name(run.source) if run else "-",
            "drift": _drift_of(session, run.batch_id, run.id) if run else None,
        }


@unit_of_work
def metric_history(engine: Engine, model: str, name: str = "roc_auc", scope: str = "batch",
                   limit: int = 60) -> list[dict[str, Any]]:
    """The last ``limit`` values of one metric of a model, oldest first (for a chart)."""
    with Session(engine) as session:
        points = session.exec(select(MetricPoint).where(MetricPoint.model_name == model, MetricPoint.name == name,
                                                        MetricPoint.scope == scope)
                              .order_by(col(MetricPoint.id).desc()).limit(limit)).all()
        versions = _versions_by_id(session, {p.model_version_id for p in points})
        return [{"value": p.value, "at": p.at, "batch_time": p.batch_time, "version": versions[p.model_version_id].version
                 if p.model_version_id in versions else None, "alert": p.alert} for p in reversed(points)]


@unit_of_work
def estimate_record(engine: Engine, model: str, name: str = "accuracy", limit: int = 100) -> dict[str, Any]:
    """The label-free estimate of ``name`` against the realised value, batch by batch, each miss explained.

    One row per (model version, batch) that has both an estimate and realised metrics, oldest first;
    ``mae`` is the mean absolute miss over the rows and ``within`` the share within the tolerance.
    """
    from keel.core.monitoring.estimate import TOLERANCE, WITHIN, explain_miss

    wanted = [name, "roc_auc", "positive_rate", "n", "positives"]
    with Session(engine) as session:
        latest = session.exec(select(MetricPoint.model_version_id, MetricPoint.dataset_id, MetricPoint.run_id,
                                     MetricPoint.batch_time).where(
            MetricPoint.model_name == model, MetricPoint.scope == "estimate", MetricPoint.name == name)
            .order_by(col(MetricPoint.id).desc()).limit(limit)).all()
        keys = {(v, d) for v, d, _, _ in latest}
        points: dict[tuple[int, str], dict[str, dict[str, float | None]]] = {}
        datasets = {d for _, d in keys}
        for p in session.exec(select(MetricPoint).where(
                MetricPoint.model_name == model, col(MetricPoint.dataset_id).in_(sorted(datasets)),
                col(MetricPoint.scope).in_(["estimate", "batch"]), col(MetricPoint.name).in_(wanted))):
            if (p.model_version_id, p.dataset_id) in keys:
                points.setdefault((p.model_version_id, p.dataset_id), {}).setdefault(p.scope, {})[p.name] = p.value
        runs = {r.id: r for r in session.exec(select(PipelineRun).where(
            col(PipelineRun.id).in_([r for _, _, r, _ in latest if r])))}
        versions = _versions_by_id(session, {v for v, _ in keys})
    rows: list[dict[str, Any]] = []
    for version_id, dataset_id, run_id, batch_time in reversed(latest):
        got = points.get((version_id, dataset_id), {})
        est, real = got.get("estimate", {}), got.get("batch", {})
        estimated, realised = est.get(name), real.get(name)
        if realised is None:
            continue  # labels not in yet
        run = runs.get(run_id or "")
        source = ((run.summary or {}).get("estimate") or {}).get("calibration_source") if run else None
        n, positives = real.get("n"), real.get("positives")
        realised_rate = positives / n if n and positives is not None else None
        miss = estimated - realised if estimated is not None else None
        rows.append({
            "batch": _batch_name(run.source if run else None), "dataset_id": dataset_id, "batch_time": batch_time,
            "version": versions[version_id].version if version_id in versions else None,
            "estimated": estimated, "realised": realised, "miss": miss, "calibration": source or "-",
            "expected_rate": est.get("positive_rate"), "realised_rate": realised_rate,
            "estimated_auc": est.get("roc_auc"), "realised_auc": real.get("roc_auc"),
            "why": explain_miss(estimated, realised, est.get("positive_rate"), realised_rate,
                                est.get("roc_auc"), real.get("roc_auc"), source),
        })
    misses = [abs(r["miss"]) for r in rows if r["miss"] is not None]
    return {"model": model, "metric": name, "rows": rows, "tolerance": TOLERANCE, "within_label": WITHIN,
            "mae": sum(misses) / len(misses) if misses else None,
            "within": sum(m <= TOLERANCE for m in misses) / len(misses) if misses else None}


# --- alerts and quarantine -------------------------------------------------------------------------


def alert_row(a: Alert) -> dict[str, Any]:
    return {"id": a.id, "rule": a.rule, "model": a.model_name, "severity": a.severity, "message": a.message,
            "run_id": a.run_id, "dataset_id": a.dataset_id, "delivered": a.delivered,
            "delivery_error": a.delivery_error, "details": a.details, "acked_by": a.acked_by, "acked_at": a.acked_at,
            "ack_reason": a.ack_reason, "created_at": a.created_at}


@unit_of_work
def alerts_page(engine: Engine, open_only: bool = True, model: str | None = None, limit: int = 100,
                offset: int = 0) -> dict[str, Any]:
    """Alerts, newest first; open ones (not acknowledged) by default. `keel alerts` and the TUI both read this."""
    with Session(engine) as session:
        query = select(Alert)
        if open_only:
            query = query.where(Alert.acked_at == None)  # noqa: E711
        if model:
            query = query.where(Alert.model_name == model)
        rows = [alert_row(a) for a in session.exec(query.order_by(col(Alert.id).desc()).offset(offset).limit(limit))]
        total, more = capped_count(session, query.with_only_columns(col(Alert.id)), max(COUNT_CAP, offset + limit))
        return _page(rows, total, more, offset)


def _flag(column: Any) -> Any:
    """A boolean column as 1 or 0: PostgreSQL has no max() or sum() of booleans (SQLite stores them as integers)."""
    return case((column == True, 1), else_=0)  # noqa: E712


@unit_of_work
def quarantine_page(engine: Engine, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """Quarantined batches, newest first: rows held back, whether the whole batch was, one reason."""
    with Session(engine) as session:
        # sqlmodel types select() for at most four columns; six are fine at run time
        grouped = (select(Quarantine.dataset_id, func.count().label("rows"),  # type: ignore[call-overload]
                          func.max(_flag(Quarantine.whole_batch)).label("whole"),
                          func.min(Quarantine.reason).label("reason"), func.max(Quarantine.created_at).label("at"),
                          func.sum(_flag(Quarantine.replayed)).label("replayed"))
                   .group_by(Quarantine.dataset_id))
        found = session.exec(grouped.order_by(func.max(Quarantine.created_at).desc(), col(Quarantine.dataset_id))
                             .offset(offset).limit(limit)).all()
        sources = {d.id: d.source for d in session.exec(select(DatasetVersion).where(
            col(DatasetVersion.id).in_([r[0] for r in found])))} if found else {}
        total, more = capped_count(session, select(Quarantine.dataset_id).distinct(), max(COUNT_CAP, offset + limit))
        whole_reasons = {}
        if found:
            for q in session.exec(select(Quarantine).where(col(Quarantine.dataset_id).in_([r[0] for r in found]),
                                                           Quarantine.whole_batch == True)):  # noqa: E712
                whole_reasons[q.dataset_id] = q.reason
        rows = [{"dataset_id": d, "batch": _batch_name(sources.get(d)), "rows": n - (1 if whole else 0),
                 "whole_batch": bool(whole), "reason": whole_reasons.get(d, reason), "at": at,
                 "replayed": int(replayed or 0)} for d, n, whole, reason, at, replayed in found]
        return _page(rows, total, more, offset)


@unit_of_work
def quarantine_rows(engine: Engine, dataset_id: str, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """The quarantined rows of one batch with their reasons."""
    with Session(engine) as session:
        query = select(Quarantine).where(Quarantine.dataset_id == dataset_id, Quarantine.row_index >= 0)
        rows = [{"row_index": q.row_index, "row_id": q.row_id, "reason": q.reason, "replayed": q.replayed}
                for q in session.exec(query.order_by(col(Quarantine.row_index)).offset(offset).limit(limit))]
        total, more = capped_count(session, query.with_only_columns(col(Quarantine.id)), max(COUNT_CAP, offset + limit))
        return _page(rows, total, more, offset)


@unit_of_work
def model_names(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(ModelVersion.model_name).distinct().order_by(col(ModelVersion.model_name))))



def fmt_time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


# --- dead letters: failed runs not yet got through -------------------------------------------------


@unit_of_work
def dead_letters(engine: Engine, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Batches whose pipeline runs failed and that no later run got through, newest first: the stage that
    failed, its error, how many attempts failed. Quarantined batches are the other kind (quarantine_page)."""
    with Session(engine) as session:
        query = select(PipelineRun).where(PipelineRun.flow == "run_pipeline",
                                          col(PipelineRun.status).in_(("failed", "completed", "quarantined")))
        if model:
            query = query.where(PipelineRun.model_name == model)
        letters: dict[tuple[str, str | None], dict[str, Any]] = {}
        for order, run in enumerate(session.exec(query.order_by(col(PipelineRun.started_at)))):
            key = (run.model_name, run.batch_id or run.source)
            if run.status != "failed":
                letters.pop(key, None)  # a later run got through: resolved
                letters.pop((run.model_name, run.source), None)  # so is a run that failed before its batch had an id
                continue
            letter = letters.setdefault(key, {"model": run.model_name, "dataset_id": run.batch_id,
                                              "source": run.source, "batch": _batch_name(run.source), "attempts": 0})
            letter.update(attempts=letter["attempts"] + 1, run_id=run.id, error=run.error, failed_at=run.finished_at,
                          order=order)
        ids = [d["run_id"] for d in letters.values()]
        stages = {s.run_id: s.name for s in session.exec(select(StageRun).where(
            col(StageRun.run_id).in_(ids), StageRun.status == "failed"))} if ids else {}
    newest_first = sorted(letters.values(), key=lambda d: d.pop("order"), reverse=True)
    return [{**d, "stage": stages.get(d["run_id"], "start")} for d in newest_first[:limit]]
