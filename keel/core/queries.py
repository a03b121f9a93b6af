"""Read-side queries shared by the CLI and the TUI; everything pages through the store."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from keel.core.store.models import Alias, MetricPoint, ModelVersion, PipelineRun


def list_runs(engine: Engine, model: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Runs, newest first."""
    with Session(engine) as session:
        query = select(PipelineRun).order_by(col(PipelineRun.started_at).desc()).offset(offset).limit(limit)
        if model:
            query = query.where(PipelineRun.model_name == model)
        out = []
        for run in session.exec(query):
            s = run.summary or {}
            drift = s.get("drift") or {}
            out.append({
                "run_id": run.id, "flow_run_id": run.flow_run_id, "model": run.model_name, "source": run.source,
                "dataset_version": run.batch_id, "status": run.status, "decision": run.decision,
                "drifted": len(drift.get("drifted") or []), "metrics": s.get("metrics"),
                "model_version": s.get("model_version"), "production_version": s.get("production_version"),
                "replay_of": run.replay_of, "started_at": run.started_at, "finished_at": run.finished_at,
                "error": run.error,
            })
        return out


def list_models(engine: Engine, model: str | None = None, limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
    """Model versions with status, aliases and holdout metrics, newest first."""
    with Session(engine) as session:
        query = select(ModelVersion).order_by(col(ModelVersion.model_name), col(ModelVersion.version).desc())
        if model:
            query = query.where(ModelVersion.model_name == model)
        versions = list(session.exec(query.offset(offset).limit(limit)))
        aliases: dict[int, list[str]] = {}
        for alias in session.exec(select(Alias)):
            aliases.setdefault(alias.model_version_id, []).append(alias.alias)
        return [{
            "name": mv.model_name, "version": mv.version, "status": mv.status, "aliases": aliases.get(mv.id or 0, []),
            "metrics": {k: v for k, v in (mv.train_metrics or {}).items() if isinstance(v, int | float)},
            "artifact_sha256": mv.artifact_sha256, "train_dataset": mv.train_dataset_id,
            "holdout_dataset": mv.holdout_dataset_id, "run_id": mv.run_id, "created_at": mv.created_at,
        } for mv in versions]


def count_metric_points(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(MetricPoint)).one()
