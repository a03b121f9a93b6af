"""Delayed labels: attach labels that arrive later to already-scored rows, then measure the batch.

A labels file carries the id column and the target column of keel.toml. Each label goes onto every
stored prediction of that row id; the realised metrics of each batch and model touched are then
computed from all its labelled predictions and stored (scope "batch"), and the drop rule is checked.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import bindparam
from sqlmodel import col, func, select

from keel.core.data.batches import read_batch
from keel.core.data.features import FeatureSpec, infer_positive, label_array
from keel.core.errors import DataError, UsageError
from keel.core.monitoring import alerts, thresholds
from keel.core.store.engine import unit_of_work
from keel.core.store.models import MetricPoint, ModelVersion, Prediction, PredictionSet
from keel.core.workspace import Workspace

CHUNK = 30_000  # ids a query takes: each query reads the prediction table once; SQLite takes 32,766 parameters


@unit_of_work
def _positive(ws: Workspace, labels: Any) -> str:
    """The positive class: keel.toml's, else the production model's, else inferred from the file."""
    if ws.cfg.positive is not None:
        return str(ws.cfg.positive).lower() if isinstance(ws.cfg.positive, bool) else str(ws.cfg.positive)
    with ws.session() as session:
        mv = session.exec(select(ModelVersion).where(ModelVersion.model_name == ws.cfg.model)
                          .order_by(col(ModelVersion.version).desc())).first()
    if mv is not None and mv.positive is not None:
        return mv.positive
    return infer_positive(ws.cfg, labels)


def read_labels(ws: Workspace, path: str | Path) -> tuple[dict[str, int], dict[str, int]]:
    """(labels by row id, counts of what was skipped) from a CSV or Parquet labels file."""
    if not ws.cfg.id:
        raise UsageError("keel.toml sets no 'id' column: labels are attached to scored rows by their id")
    frame = read_batch(path)
    missing = [c for c in (ws.cfg.id, ws.cfg.target) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column '{missing[0]}' is missing (a labels file needs '{ws.cfg.id}' and "
                        f"'{ws.cfg.target}'; it has {', '.join(frame.columns[:8])})")
    spec = FeatureSpec([], [], ws.cfg.target, _positive(ws, frame[ws.cfg.target]), ws.cfg.id)
    values = frame[ws.cfg.target].drop_nulls().cast(str).unique().to_list()
    if len(values) > 2:
        raise DataError(f"{path}: target '{ws.cfg.target}' has {len(values)} values; keel needs a binary label")
    y = label_array(frame, spec)
    ids = frame[ws.cfg.id].cast(str).to_list()
    labels: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    for row_id, label in zip(ids, y.tolist(), strict=True):
        if row_id is None:
            skipped["no id"] += 1
        elif np.isnan(label):
            skipped["no label"] += 1
        else:
            if row_id in labels:
                skipped["duplicate id (last one kept)"] += 1
            labels[row_id] = int(label)
    return labels, dict(skipped)


@unit_of_work
def attach_labels(ws: Workspace, path: str | Path) -> dict[str, Any]:
    """Attach the file's labels to stored predictions; measure every batch touched; check the drop rule."""
    labels, skipped = read_labels(ws, path)
    ids = list(labels)
    found: list[tuple[str, str, int, int | None, str | None, int]] = []
    with ws.session() as session:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            # sqlmodel types select() for at most four columns; six are fine at run time
            found += session.exec(select(PredictionSet.dataset_id, Prediction.row_id,  # type: ignore[call-overload]
                                         PredictionSet.model_version_id, Prediction.actual, PredictionSet.run_id,
                                         Prediction.set_id)
                                  .join(PredictionSet, col(PredictionSet.id) == col(Prediction.set_id))
                                  .where(col(Prediction.row_id).in_(chunk))).all()
        model_ids = set(session.exec(select(ModelVersion.id).where(
            ModelVersion.model_name == ws.cfg.model)).all()) if found else set()
    found = [f for f in found if f[2] in model_ids]  # another model's predictions are not ours to label
    known = {f[1] for f in found}
    unknown = [i for i in ids if i not in known]
    changes = [{"s": s, "r": r, "a": labels[r]} for _, r, _, actual, _, s in found if actual != labels[r]]
    table = Prediction.__table__  # type: ignore[attr-defined]
    with ws.session() as session:
        if changes:
            session.execute(table.update().where(table.c.set_id == bindparam("s"), table.c.row_id == bindparam("r"))
                            .values(actual=bindparam("a")), changes)
    touched: dict[tuple[str, int], Counter] = {}
    for d, _, m, _, run, _ in found:
        touched.setdefault((d, m), Counter())[run] += 1
    batches = [_measure(ws, d, m, runs.most_common(1)[0][0]) for (d, m), runs in sorted(touched.items())]
    return {"file": str(path), "labels": len(labels), "skipped": skipped, "matched_rows": len(found),
            "changed_rows": len(changes), "unknown_ids": len(unknown), "unknown_examples": unknown[:5],
            "batches": batches}


@unit_of_work
def _measure(ws: Workspace, dataset_id: str, model_version_id: int, run_id: str | None) -> dict[str, Any]:
    """Realised metrics of one model on one batch from its labelled predictions; stored, thresholds set."""
    from keel.core.model.evaluate import classification_metrics, confusion_drift

    with ws.session() as session:
        in_set = (select(PredictionSet.id).where(PredictionSet.dataset_id == dataset_id,
                                                 PredictionSet.model_version_id == model_version_id).scalar_subquery())
        rows = session.exec(select(Prediction.score, Prediction.actual).where(
            Prediction.set_id == in_set, Prediction.actual != None)).all()  # noqa: E711
        total = session.exec(select(func.count()).select_from(Prediction).where(Prediction.set_id == in_set)).one()
        mv = session.get(ModelVersion, model_version_id)
        estimate = dict(session.exec(select(MetricPoint.name, MetricPoint.value).where(
            MetricPoint.dataset_id == dataset_id, MetricPoint.model_version_id == model_version_id,
            MetricPoint.scope == "estimate")).all())
    assert mv is not None
    scores = np.array([r[0] for r in rows], dtype=np.float64)
    actual = np.array([r[1] for r in rows], dtype=np.int64)
    metrics = classification_metrics(actual, scores, ws.cfg.monitor.threshold)
    baseline = mv.train_metrics or {}
    if baseline.get("confusion"):
        metrics["confusion_drift"] = confusion_drift(baseline["confusion"], metrics["confusion"])
    limits = thresholds.thresholds(baseline, ws.cfg.monitor.max_drop)
    flagged = thresholds.store_points(ws, model_version_id, dataset_id, "batch", thresholds.flat_metrics(metrics),
                                      run_id, limits)
    fired: list[dict[str, Any]] = []
    metric, base = ws.cfg.monitor.metric, baseline.get(ws.cfg.monitor.metric)
    value = metrics.get(metric)
    if run_id and isinstance(base, int | float) and isinstance(value, int | float):
        check = alerts.Check("drop", metric in flagged,
                             f"realised {metric} {value:.3f} on batch {dataset_id[:12]} once labels came, "
                             f"{base:.3f} at training (allowed change {ws.cfg.monitor.max_drop:g})", float(value))
        fired = alerts.evaluate(ws, run_id, dataset_id, [check], {"model_version": mv.version, "source": "labels"})
    return {"dataset_id": dataset_id, "model_version": mv.version, "labelled": len(rows), "scored": total,
            "metrics": {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss",
                                                "brier")},
            "estimate": estimate, "below_threshold": sorted(flagged), "alerts": fired}
