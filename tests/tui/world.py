"""A small, real and deterministic store for the TUI tests.

Four monthly batches go through keel's own core functions (ingest, the data contract, scoring, scipy
drift, monitoring, LightGBM training, paired evaluation, the gate and the registry): v1 is promoted,
v2 is promoted over it, v3 waits in review against v2. One batch is quarantined whole, another
loses a few rows to quarantine, and two alerts fire. The clock and the ids are fixed so SVG
snapshots are stable; the timestamps are set as the rows are written (audit events are hashed with
theirs, so they are never edited afterwards).
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import text

MODEL = "churn"
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def write_config(root: Path, approvers: list[str]) -> Path:
    path = root / "keel.toml"
    quoted = ", ".join(f'"{a}"' for a in approvers)
    path.write_text(
        f'model = "{MODEL}"\ntarget = "churned"\nid = "customer"\n'
        '[contract]\nranges = { tenure = [0, 120] }\nmax_bad_share = 0.05\n'
        '[drift]\nengine = "scipy"\n'
        '[gate]\nauto_promote = false\nn_boot = 100\n'
        f"[review]\napprovers = [{quoted}]\n")
    return path


def make_batch(root: Path, month: int, n: int = 800, shift: float = 0.0, bad: int = 0) -> Path:
    """Customers with tenure, spend and a plan; churn depends on all three; ``shift`` drifts spend."""
    rng = np.random.default_rng(month)
    tenure = rng.integers(1, 100, n).astype(float)
    spend = rng.normal(50 + shift, 15, n)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    logit = -0.03 * tenure + 0.04 * (spend - 50) + np.where(plan == "basic", 0.8, -0.4)
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    tenure[:bad] = 500.0  # outside the declared range: quarantined row by row
    frame = pl.DataFrame({"customer": [f"c{month:02d}-{i:04d}" for i in range(n)], "tenure": tenure,
                          "spend": spend, "plan": plan, "churned": churned})
    path = root / f"customers-2026-{month:02d}.parquet"
    frame.write_parquet(path)
    return path


class Clock:
    """A fixed clock that moves one minute per call."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> datetime:
        return START + timedelta(minutes=next(self.ticks))


def build(root: Path, approvers: list[str], monkeypatch: Any) -> Path:
    """Write keel.toml and fill the store under $KEEL_HOME; returns the config path."""
    from keel.core.data.features import Columns
    from keel.core.model.train import model_params
    from keel.core.monitoring import hooks as monitoring
    from keel.core.pipeline import run as book
    from keel.core.pipeline import stages as pipeline
    from keel.core.registry import audit
    from keel.core.registry import transactions as registry
    from keel.core.store import records
    from keel.core.store.models import Alert
    from keel.core.workspace import Workspace

    clock = Clock()
    ids = itertools.count(1)
    monkeypatch.setattr(audit, "now", clock)
    monkeypatch.setattr(records.uuid, "uuid4", lambda: uuid.UUID(int=next(ids)))
    config = write_config(root, approvers)
    ws = Workspace.open(config)
    actor = "ops (pipeline)"
    times: dict[str, datetime] = {}
    production: dict[str, Any] | None = None
    window: list[str] = []
    train_ids: dict[int, str] = {}

    def stage(run_id: str, name: str, ms: float, cached: bool = False, detail: Any = None, status: str = "completed") -> None:
        records.record_stage(ws, run_id, name, status, cached, ms, detail)

    def train(run_id: str, seed: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        sets = pipeline.make_training_sets(ws, window)
        params = model_params({"min_data_in_leaf": 10}, seed)
        columns = Columns.of(ws.cfg)
        model = pipeline.train(ws, sets["train"], columns, params, 20)
        evaluation = pipeline.evaluate(ws, sets["holdout"], model, production, ws.cfg.monitor.threshold,
                                       ws.cfg.gate.alpha, ws.cfg.gate.n_boot)
        mv = book.register_candidate(ws, run_id, sets, model, params, 20, columns.to_dict(), evaluation, production)
        train_ids[mv.version] = sets["train"]
        stage(run_id, "train", 812.0, detail={"sha256": model["sha256"]})
        stage(run_id, "evaluate", 240.0)
        return mv, evaluation, sets

    months = [(1, 0.0, 0), (2, 4.0, 6), (3, 0.0, 200), (4, 14.0, 0)]
    for month, shift, bad in months:
        path = make_batch(root, month, shift=shift, bad=bad)
        run_id = records.start_run(ws, str(path), f"00000000-0000-4000-8000-{month:012d}")
        times[run_id] = clock()
        ds = pipeline.ingest(ws, str(path))
        stage(run_id, "ingest", 35.5, detail={"dataset_id": ds["id"], "rows": ds["rows"]})
        records.update_run(ws, run_id, batch_id=ds["id"], production_before=production and production["id"])
        frame = pipeline.load_dataset(ws, ds["id"])
        contract = pipeline.contract_for(frame, production, ws.cfg, ws.cfg.contract)
        checked = pipeline.validate_batch(ws, ds["id"], contract, ws.cfg.contract)
        stage(run_id, "validate", 48.0, detail={k: v for k, v in checked.items() if k != "bad"})
        records.record_quarantine(ws, ds["id"], checked["bad"], frame["customer"].to_list(), checked["batch_reason"])
        bad_rows = sorted({i for i, _ in checked["bad"]})
        summary: dict[str, Any] = {"run_id": run_id, "model": MODEL, "dataset_version": ds["id"],
                                   "quarantined_rows": len(bad_rows), "drift": None, "metrics": None}
        if checked["batch_reason"]:
            summary.update(decision="quarantined", reasons=[checked["batch_reason"]], status="quarantined")
            records.finish_run(ws, run_id, "quarantined", decision="quarantined", reasons=summary["reasons"],
                               summary=summary)
            continue
        window.append(ds["id"])
        decision, reasons = None, []
        if production is not None:
            scores = pipeline.score(ws, ds["id"], production, bad_rows)
            stage(run_id, "score", 61.0, cached=month == 2)
            report = pipeline.drift(ws, production["train_dataset_id"], ds["id"], production, bad_rows, ws.cfg.drift)
            records.record_drift(ws, ds["id"], production["train_dataset_id"], "s", run_id, report)
            stage(run_id, "drift", 130.0, detail={"detected": report["detected"]})
            row_ids, actual = pipeline.batch_ids(ws, ds["id"], bad_rows, pipeline.spec_of(production))
            records.record_predictions(ws, ds["id"], production["id"], row_ids, scores, actual, 0.5, run_id)
            summary["estimate"] = monitoring.after_scoring(ws, ds["id"], production, scores, run_id)
            metrics = pipeline.monitor(ws, ds["id"], production, scores, bad_rows, ws.cfg.monitor.threshold)
            records.record_metrics(ws, production["id"], ds["id"], "batch", metrics, run_id)
            stage(run_id, "monitor", 22.0)
            drifted = [f["name"] for f in report["features"] if f["drifted"]]
            summary.update(drift={"detected": report["detected"], "drifted": drifted}, metrics=metrics)
        mv, evaluation, _ = train(run_id, seed=month)
        gate = pipeline.gate(evaluation, bool(summary["drift"] and summary["drift"]["detected"]), ws.cfg.gate)
        stage(run_id, "gate", 3.0, detail={"outcome": gate["outcome"]})
        reasons = gate["reasons"]
        if month < 4:  # the operator let the first two through
            registry.promote(ws, MODEL, mv.version, "; ".join(reasons), actor=actor, action="promote:auto",
                             authorise=False, details={"run_id": run_id})
            decision = "promoted"
        else:
            registry.open_review(ws, MODEL, mv.version, reasons, evaluation.get("comparison"), run_id, actor=actor)
            decision = "review"
        with ws.session() as session:
            prod = registry.production_version(session, MODEL)
            production = pipeline.model_ref(prod) if prod else None
        summary.update(decision=decision, reasons=reasons, model_version=mv.version,
                       production_version=production and production["version"], evaluation=evaluation.get("comparison"))
        records.finish_run(ws, run_id, "completed", decision=decision, reasons=reasons, summary=summary,
                           model_version_id=mv.id)

    runs = sorted(times)
    with ws.session() as session:
        session.add(Alert(rule="drift", model_name=MODEL, dataset_id=None, run_id=runs[-1], severity="warning",
                          message="spend drifted on customers-2026-04 (effect above the floor)",
                          created_at=START + timedelta(hours=2)))
        session.add(Alert(rule="quarantine", model_name=MODEL, dataset_id=None, run_id=runs[2], severity="critical",
                          message="customers-2026-03 quarantined: 25% of rows break the contract",
                          created_at=START + timedelta(hours=1)))
    _fix_times(ws.engine, times)
    return config


def _fix_times(engine: Any, times: dict[str, datetime]) -> None:
    """Give the rows written with the real clock fixed times (never the hashed audit events)."""
    def stamp(at: datetime) -> str:
        return at.replace(tzinfo=None).isoformat(sep=" ")

    with engine.begin() as conn:
        for run_id, at in times.items():
            conn.execute(text("UPDATE pipeline_run SET started_at=:a, finished_at=:b WHERE id=:id"),
                         {"a": stamp(at), "b": stamp(at + timedelta(seconds=42)), "id": run_id})
            conn.execute(text("UPDATE stage_run SET started_at=:a WHERE run_id=:id"), {"a": stamp(at), "id": run_id})
            for table, column in (("metric_point", "at"), ("drift_report", "created_at")):
                conn.execute(text(f"UPDATE {table} SET {column}=:a WHERE run_id=:id"), {"a": stamp(at), "id": run_id})
            conn.execute(text("UPDATE model_version SET created_at=:a WHERE run_id=:id"), {"a": stamp(at), "id": run_id})
            conn.execute(text("UPDATE review SET created_at=:a WHERE run_id=:id"), {"a": stamp(at), "id": run_id})
        for table in ("dataset_version", "quarantine"):
            conn.execute(text(f"UPDATE {table} SET created_at=:a"), {"a": stamp(START)})
