"""Monitoring hooks the pipeline calls: label-free estimates after scoring, thresholds and alerts after a run.

Also the Prometheus view of the store (`keel metrics serve`): the latest value of every metric.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from keel.core import records
from keel.core.alerts import Check, evaluate
from keel.core.evaluate import HIGHER_IS_BETTER
from keel.core.memo import Memo
from keel.core.store.models import Alert, MetricPoint, ModelVersion, PipelineRun, Prediction, utcnow
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
    out = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    cd = metrics.get("confusion_drift")
    if isinstance(cd, dict):
        out["confusion_drift_p"] = cd.get("p_value")
        out["confusion_cramers_v"] = cd.get("cramers_v")
    return out


def store_points(ws: Workspace, model_version_id: int, dataset_id: str, scope: str, values: dict[str, Any],
                 run_id: str | None, limits: Thresholds) -> set[str]:
    """Insert or update the metric points of one model on one dataset, thresholds and alert flags set."""
    flagged = breaches(values, limits)
    records.record_metrics(ws, model_version_id, dataset_id, scope, values, run_id, limits, flagged)
    with ws.session() as session:  # record_metrics keeps the first row: bring existing ones up to date
        for name, value in values.items():
            lo, hi = limits.get(name, (None, None))
            session.execute(update(MetricPoint).where(
                MetricPoint.model_version_id == model_version_id, MetricPoint.dataset_id == dataset_id,
                MetricPoint.scope == scope, MetricPoint.name == name,
            ).values(value=records.clean(value), lower=lo, upper=hi, alert=name in flagged))
    return flagged


def _version(ws: Workspace, version: int | None) -> ModelVersion | None:
    if version is None:
        return None
    with ws.session() as session:
        return session.exec(select(ModelVersion).where(ModelVersion.model_name == ws.cfg.model,
                                                       ModelVersion.version == version)).first()


# --- the label-free estimate ---------------------------------------------------------------------


_CALIBRATORS: Memo[Any] = Memo(16)
MIN_CALIBRATION_ROWS = 500  # fewer out-of-time labelled rows than this: the training holdout serves
RECENT_LOOKBACK = 4  # runs looked at per calibration batch wanted (reruns and unlabelled batches skipped)


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
            if labelled:
                found.append((batch, int(labelled)))
            if len(found) == ws.cfg.monitor.calibration_batches:
                break
    return found


def _fit(ws: Workspace, key: tuple[Any, ...], data: Any) -> Any:
    from keel.core.estimate import fit_calibrator

    return _CALIBRATORS.get(key, lambda: fit_calibrator(*data(), ws.cfg.monitor.calibration))


def calibrator_for(ws: Workspace, production: dict[str, Any], dataset_id: str,
                   run_id: str) -> tuple[Any, str, list[str]]:
    """The production model's calibration, where it was fitted ("recent" or "holdout"), and on which datasets.

    With ``[monitor] calibrate_on = "recent"`` it is fitted on the model's stored predictions of the
    newest labelled batches it scored (see :func:`recent_labelled`); until there are enough of them,
    and with "holdout", on its training holdout. Fitted once per process and input.
    """
    from keel.core import pipeline
    from keel.core.data import label_array
    from keel.core.errors import DataError

    base = (ws.settings.db_url, production["sha256"], ws.cfg.monitor.calibration)
    recent = recent_labelled(ws, production, dataset_id, run_id) if ws.cfg.monitor.calibrate_on == "recent" else []
    if sum(n for _, n in recent) >= MIN_CALIBRATION_ROWS:
        ids = [b for b, _ in recent]

        def stored() -> tuple[np.ndarray, np.ndarray]:
            with ws.session() as session:
                rows = session.exec(select(Prediction.actual, Prediction.score).where(
                    col(Prediction.dataset_id).in_(ids), Prediction.model_version_id == production["id"],
                    col(Prediction.actual).is_not(None))).all()
            return np.array([r[0] for r in rows], dtype=np.float64), np.array([r[1] for r in rows], dtype=np.float64)

        try:
            return _fit(ws, (*base, tuple(recent)), stored), "recent", ids
        except DataError as exc:  # one class only, say: the holdout serves
            log.info("calibration on recent batches failed (%s): using the training holdout", exc)
    holdout = production["holdout_dataset_id"]

    def held_out() -> tuple[np.ndarray, np.ndarray]:
        y = label_array(pipeline.load_dataset(ws, holdout), pipeline.spec_of(production))
        return y, pipeline.score(ws, holdout, production, [])

    return _fit(ws, (*base, holdout), held_out), "holdout", [holdout]


def after_scoring(ws: Workspace, dataset_id: str, production: dict[str, Any], scores: np.ndarray,
                  run_id: str) -> dict[str, Any] | None:
    """Label-free performance estimate (CBPE) of the production model on this batch, stored as metric points."""
    if not ws.cfg.monitor.estimate or not production.get("holdout_dataset_id"):
        return None
    from keel.core.estimate import ESTIMATED, estimate_metrics

    try:
        calibrator, source, calibrated_on = calibrator_for(ws, production, dataset_id, run_id)
        est = estimate_metrics(np.asarray(scores), calibrator, ws.cfg.monitor.threshold, ws.cfg.monitor.prior_shift)
    except Exception as exc:  # the estimate is advice: it never fails the run, but says why it is missing
        log.warning("label-free estimate failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    limits = thresholds(production.get("train_metrics"), ws.cfg.monitor.max_drop)
    values = {**{k: est[k] for k in ESTIMATED}, "positive_rate": est["expected_positive_rate"]}
    flagged = store_points(ws, production["id"], dataset_id, "estimate", values, run_id, limits)
    return {**est, "method": "cbpe", "calibration": ws.cfg.monitor.calibration,
            "prior_shift": ws.cfg.monitor.prior_shift, "calibration_source": source,
            "calibration_rows": calibrator.n, "calibrated_on": calibrated_on, "below_threshold": sorted(flagged)}


# --- after every run: thresholds on realised metrics, then the alert rules -----------------------


def _worse(name: str, value: float, base: float, max_drop: float) -> bool:
    return value < base - max_drop if HIGHER_IS_BETTER.get(name, True) else value > base + max_drop


def _checks(ws: Workspace, summary: dict[str, Any], baseline: dict[str, Any] | None) -> list[Check]:
    status, batch = summary.get("status"), summary.get("batch") or "?"
    name = str(batch).rsplit("/", 1)[-1]
    checks = [Check("failure", status == "failed", f"run on {name} failed: {summary.get('error') or '-'}")]
    if status == "failed":
        return checks
    reasons = summary.get("reasons") or ["-"]
    checks.append(Check("quarantine", status == "quarantined", f"batch {name} quarantined: {reasons[0]}"))
    drift = summary.get("drift")
    if drift is not None:
        drifted = list(drift.get("drifted") or [])
        pred = bool((drift.get("prediction") or {}).get("drifted"))
        what = ", ".join(drifted[:5]) + (f" (+{len(drifted) - 5})" if len(drifted) > 5 else "")
        text = f"{len(drifted)} feature(s) drifted on {name}: {what}" if drifted else f"no feature drifted on {name}"
        checks.append(Check("drift", bool(drifted) or pred, text + ("; prediction drift" if pred else ""),
                            float(len(drifted))))
    metric, max_drop = ws.cfg.monitor.metric, ws.cfg.monitor.max_drop
    base = (baseline or {}).get(metric)
    for rule, values, word in (("drop", summary.get("metrics"), "realised"),
                               ("estimated_drop", summary.get("estimate"), "estimated")):
        value = (values or {}).get(metric)
        if isinstance(base, int | float) and isinstance(value, int | float):
            checks.append(Check(rule, _worse(metric, value, base, max_drop),
                                f"{word} {metric} {value:.3f} on {name}, {base:.3f} at training "
                                f"(allowed change {max_drop:g})", float(value)))
    return checks


def after_run(ws: Workspace, run_id: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Set thresholds and alert flags on the run's metric points, then evaluate the alert rules."""
    try:
        with ws.session() as session:
            run = session.get(PipelineRun, run_id)
            dataset_id = summary.get("dataset_version") or (run.batch_id if run else None)
        production = _version(ws, summary.get("production_before"))
        baseline = production.train_metrics if production else None
        metrics = summary.get("metrics")
        if metrics and production is not None and production.id is not None and dataset_id:
            store_points(ws, production.id, dataset_id, "batch", flat_metrics(metrics), run_id,
                         thresholds(baseline, ws.cfg.monitor.max_drop))
        context = {"batch": summary.get("batch"), "production_version": summary.get("production_before")}
        return evaluate(ws, run_id, dataset_id, _checks(ws, summary, baseline), context)
    except Exception:  # alerting must never turn a finished run into a failed one
        log.exception("monitoring after run %s failed", run_id)
        return []


# --- Prometheus ----------------------------------------------------------------------------------


def latest_points(engine: Engine) -> list[dict[str, Any]]:
    """The newest point of every (model, scope, metric), with its model version."""
    with Session(engine) as session:
        newest = select(func.max(MetricPoint.id)).group_by(MetricPoint.model_name, MetricPoint.scope, MetricPoint.name)
        points = session.exec(select(MetricPoint).where(col(MetricPoint.id).in_(newest))).all()
        versions = dict(session.exec(select(ModelVersion.id, ModelVersion.version).where(
            col(ModelVersion.id).in_({p.model_version_id for p in points}))).all()) if points else {}
        return [{"model": p.model_name, "version": versions.get(p.model_version_id), "scope": p.scope, "metric": p.name,
                 "value": p.value, "lower": p.lower, "upper": p.upper, "alert": p.alert, "at": p.at} for p in points]


def open_alert_counts(engine: Engine) -> list[tuple[str, str, str, int]]:
    with Session(engine) as session:
        return list(session.exec(select(Alert.model_name, Alert.rule, Alert.severity, func.count()).where(
            Alert.acked_at == None).group_by(Alert.model_name, Alert.rule, Alert.severity)).all())  # noqa: E711


class StoreCollector:
    """A prometheus_client collector that reads the store on every scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["model", "version", "scope", "metric"]
        value = GaugeMetricFamily("keel_metric", "Latest value of a keel metric point", labels=labels)
        lower = GaugeMetricFamily("keel_metric_lower", "Lower alert threshold of the latest point", labels=labels)
        upper = GaugeMetricFamily("keel_metric_upper", "Upper alert threshold of the latest point", labels=labels)
        flag = GaugeMetricFamily("keel_metric_alert", "1 when the latest point is past its threshold", labels=labels)
        ts = GaugeMetricFamily("keel_metric_timestamp_seconds", "When the latest point was recorded", labels=labels)
        for p in latest_points(self.engine):
            if p["value"] is None:
                continue
            key = [p["model"], str(p["version"]), p["scope"], p["metric"]]
            value.add_metric(key, float(p["value"]))
            flag.add_metric(key, 1.0 if p["alert"] else 0.0)
            ts.add_metric(key, p["at"].timestamp())
            if p["lower"] is not None:
                lower.add_metric(key, float(p["lower"]))
            if p["upper"] is not None:
                upper.add_metric(key, float(p["upper"]))
        alerts = GaugeMetricFamily("keel_alerts_open", "Unacknowledged alerts", labels=["model", "rule", "severity"])
        for model, rule, severity, n in open_alert_counts(self.engine):
            alerts.add_metric([model, rule, severity], float(n))
        up = GaugeMetricFamily("keel_exporter_scrape_timestamp_seconds", "When keel read the store")
        up.add_metric([], utcnow().timestamp())
        yield from (value, lower, upper, flag, ts, alerts, up)


def serve_metrics(engine: Engine, host: str = "127.0.0.1", port: int = 9108) -> tuple[Any, Any]:
    """Serve the Prometheus text format on host:port in a daemon thread; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine))  # type: ignore[arg-type]
    return start_http_server(port, addr=host, registry=registry)

