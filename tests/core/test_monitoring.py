"""Monitoring through real pipeline runs: thresholds on metric points, the estimate beside realised
values, and alert rules (k of n, failures, quarantine) delivered to a loopback Apprise endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
from sqlmodel import Session, col, select

from keel.core.config import Settings
from keel.core.data.batches import time_span
from keel.core.data.demo import DEMO_CONFIG
from keel.core.model.evaluate import HIGHER_IS_BETTER
from keel.core.monitoring import calibration, rules
from keel.core.monitoring.estimate import choose_calibration
from keel.core.store import queries
from keel.core.store.models import (
    Alert,
    AlertCheck,
    DatasetVersion,
    MetricPoint,
    ModelVersion,
    PipelineRun,
    Prediction,
    PredictionSet,
)
from keel.core.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]  # a Prefect server, real pipeline runs


class Inbox:
    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/keel"


def _config(folder: Path, urls: list[str], k: int, n: int, cooldown: int) -> Path:
    path = folder / "keel.toml"
    path.write_text(DEMO_CONFIG + f"\n[alerts]\nurls = {json.dumps(urls)}\npersist_k = {k}\npersist_n = {n}\n"
                    f"cooldown = {cooldown}\n")
    return path


def _run(batch: Path, config: Path, home: Path) -> dict:
    from keel.flows.run_pipeline import run_pipeline

    return run_pipeline(batch=str(batch), config=str(config), home=str(home))


@pytest.fixture(scope="module")
def world(demo_slices, tmp_path_factory):
    """Three demo months, then two failing runs, then a quarantined batch; drop/failure need 2 of 3."""
    from keel.core.store.engine import dispose_engines

    folder = tmp_path_factory.mktemp("monitoring")
    home, inbox = folder / ".keel", Inbox()
    config = _config(folder, [inbox.url], k=2, n=3, cooldown=1)
    summaries = [_run(b, config, home) for b in demo_slices[:3]]
    failures = []
    for i in range(2):
        with pytest.raises(Exception, match="no such file"):
            _run(folder / f"missing-{i}.parquet", config, home)
    bad = pl.read_parquet(demo_slices[3]).with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(-10).otherwise(pl.col("distance")).alias("distance"))
    bad.write_parquet(folder / "bad.parquet")
    quarantined = _run(folder / "bad.parquet", config, home)
    ws = Workspace.open(config, Settings(home=home))
    yield {"ws": ws, "summaries": summaries, "failures": failures, "quarantined": quarantined, "inbox": inbox}
    inbox.server.shutdown()
    dispose_engines()


def _checks(ws: Workspace, rule: str) -> list[AlertCheck]:
    with Session(ws.engine) as s:
        return list(s.exec(select(AlertCheck).where(AlertCheck.rule == rule).order_by(AlertCheck.id)))


def test_batch_metric_points_carry_thresholds_and_alert_flags(world):
    ws = world["ws"]
    max_drop = ws.cfg.monitor.max_drop
    with Session(ws.engine) as s:
        points = list(s.exec(select(MetricPoint).where(MetricPoint.scope == "batch")))
        base = {mv.id: mv.train_metrics for mv in s.exec(select(ModelVersion))}
    assert {p.dataset_id for p in points} == {x["dataset_version"] for x in world["summaries"][1:]}
    names = {p.name for p in points}
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "confusion_drift_p"} <= names
    flagged = 0
    for p in points:
        if p.name in HIGHER_IS_BETTER:
            expected = base[p.model_version_id][p.name]
            if HIGHER_IS_BETTER[p.name]:
                assert p.lower == pytest.approx(expected - max_drop) and p.upper is None
                assert p.alert == (p.value < p.lower)
            else:
                assert p.upper == pytest.approx(expected + max_drop) and p.lower is None
                assert p.alert == (p.value > p.upper)
            flagged += p.alert
    assert flagged, "the demo's later months fall below the January model's holdout figures"


def test_metric_points_carry_the_time_their_batch_is_from(world, demo_slices):
    ws = world["ws"]
    for summary, path in zip(world["summaries"][1:], demo_slices[1:3], strict=True):
        start, end = time_span(pl.read_parquet(path), "time_hour")
        with Session(ws.engine) as s:
            dataset = s.get(DatasetVersion, summary["dataset_version"])
            points = list(s.exec(select(MetricPoint).where(MetricPoint.dataset_id == summary["dataset_version"])))
        assert (dataset.data_from, dataset.data_to) == (start, end)
        assert {p.scope for p in points} == {"batch", "estimate"} and {p.batch_time for p in points} == {end}
    history = queries.metric_history(ws.engine, ws.cfg.model, "accuracy")
    assert [h["batch_time"] for h in history] == [time_span(pl.read_parquet(p), "time_hour")[1] for p in demo_slices[1:3]]


def test_estimate_is_stored_beside_the_realised_values(world):
    ws = world["ws"]
    for summary in world["summaries"][1:]:
        est = summary["estimate"]
        assert est["method"] == "cbpe" and 0.5 < est["accuracy"] < 1 and est["calibrated_on"]
        with Session(ws.engine) as s:
            points = {(p.scope, p.name): p for p in s.exec(select(MetricPoint).where(
                MetricPoint.dataset_id == summary["dataset_version"]))}
        for name in ("accuracy", "precision", "recall", "roc_auc"):
            e, r = points[("estimate", name)], points[("batch", name)]
            assert e.model_version_id == r.model_version_id and e.lower == r.lower
        assert points[("estimate", "accuracy")].value == pytest.approx(est["accuracy"])
        assert points[("estimate", "positive_rate")].value == pytest.approx(est["expected_positive_rate"])
        assert abs(points[("estimate", "accuracy")].value - summary["metrics"]["accuracy"]) < 0.06
    assert world["summaries"][0].get("estimate") is None  # nothing served the first batch


def test_estimate_calibrates_on_the_newest_labelled_batches_production_scored(world):
    """February is v1's first batch: only its training holdout can calibrate. March is calibrated on
    February as v1 scored it (out of time for v1), not on the holdout that shares days with training."""
    ws = world["ws"]
    jan, feb, mar = world["summaries"]
    assert feb["production_before"] == mar["production_before"] == jan["production_version"]
    with Session(ws.engine) as s:
        v1 = s.exec(select(ModelVersion).where(ModelVersion.version == jan["production_version"])).one()
        feb_labelled = len(s.exec(select(Prediction.row_id).join(PredictionSet, col(PredictionSet.id) == col(Prediction.set_id)).where(
            PredictionSet.dataset_id == feb["dataset_version"], PredictionSet.model_version_id == v1.id,
            Prediction.actual.is_not(None))).all())
    assert feb["estimate"]["calibration_source"] == "holdout"
    assert feb["estimate"]["calibrated_on"] == [v1.holdout_dataset_id]
    assert mar["estimate"]["calibration_source"] == "recent"
    assert mar["estimate"]["calibrated_on"] == [feb["dataset_version"]]
    assert mar["estimate"]["calibration_rows"] == feb_labelled > 2000, "every labelled row v1 scored in February"
    # calibration "auto" (the default): the method that cross-validates better on those same rows
    y, scores = calibration.calibration_rows(ws, {"id": v1.id}, "recent", [feb["dataset_version"]])
    assert y.size == feb_labelled and mar["estimate"]["calibration"] == "auto"
    assert mar["estimate"]["calibration_method"] == choose_calibration(y, scores)
    # the quarantined batch was never scored, so it calibrates nothing; the failed runs have no batch
    recent = calibration.recent_labelled(ws, {"id": v1.id}, "no-such-batch", "no-such-run")
    assert [b for b, _ in recent] == [mar["dataset_version"], feb["dataset_version"]]


def test_drop_alert_fires_after_k_of_n(world):
    ws, inbox = world["ws"], world["inbox"]
    drops = _checks(ws, "drop")
    assert [c.breached for c in drops] == [True, True], "Feb and Mar fall more than max_drop below training"
    assert [c.fired for c in drops] == [False, True], "the first breach waits; the second makes 2 of 3"
    with Session(ws.engine) as s:
        (alert,) = s.exec(select(Alert).where(Alert.rule == "drop")).all()
    assert alert.dataset_id == world["summaries"][2]["dataset_version"] and alert.delivered
    assert alert.run_id == world["summaries"][2]["run_id"]
    assert world["summaries"][2]["alerts"] and world["summaries"][1]["alerts"] == [
        a for a in world["summaries"][1]["alerts"] if a["rule"] != "drop"]
    posted = [p for p in inbox.received if p["title"].endswith(": performance drop")]  # not "estimated ..."
    assert len(posted) == 1 and "roc_auc" in posted[0]["message"]


def test_drift_rules_weigh_the_drift_by_the_production_models_importance(world):
    ws = world["ws"]
    scored = [s for s in world["summaries"] if s["production_before"]]
    with Session(ws.engine) as s:
        importance = {mv.version: mv.importance for mv in s.exec(select(ModelVersion))}
    weighted = [rules.weighted_drift(r["drift"]["features"], importance[r["production_before"]]) for r in scored]
    drift = _checks(ws, "drift")
    assert [c.value for c in drift] == pytest.approx(weighted) and all(w > 0 for w in weighted)
    assert [c.breached for c in drift] == [w >= 0.5 for w in weighted]
    effects = [r["drift"]["prediction"]["effect_size"] for r in scored]
    assert [c.value for c in _checks(ws, "prediction_drift")] == pytest.approx(effects)
    assert all(r["drift"]["drifted"] for r in scored) and not _checks(ws, "feature_drift"), \
        "features drifted, but the per-feature rule is off by default: not even checked"


def test_failed_runs_alert_once_they_persist(world):
    ws = world["ws"]
    failures = _checks(ws, "failure")
    assert [c.breached for c in failures] == [False, False, False, True, True, False]
    assert [c.fired for c in failures] == [False, False, False, False, True, False]
    with Session(ws.engine) as s:
        (alert,) = s.exec(select(Alert).where(Alert.rule == "failure")).all()
        run = s.get(PipelineRun, alert.run_id)
    assert run.status == "failed" and "no such file" in alert.message and alert.severity == "critical"
    assert any("pipeline failure" in p["title"] for p in world["inbox"].received)


def test_quarantine_is_checked_on_every_run(world):
    quarantine = _checks(world["ws"], "quarantine")
    assert [c.breached for c in quarantine] == [False, False, False, True]  # failed runs are not checked
    assert world["quarantined"]["status"] == "quarantined"
    assert "break the data contract" in quarantine[-1].detail


def test_undeliverable_alert_never_fails_the_run(demo_slices, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"json://127.0.0.1:{sock.getsockname()[1]}/keel"
    config, home = _config(tmp_path, [dead], k=1, n=1, cooldown=0), tmp_path / ".keel"
    bad = pl.read_parquet(demo_slices[0]).with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(-10).otherwise(pl.col("distance")).alias("distance"))
    bad.write_parquet(tmp_path / "bad.parquet")
    summary = _run(tmp_path / "bad.parquet", config, home)
    assert summary["status"] == "quarantined"
    (alert,) = summary["alerts"]
    assert alert["rule"] == "quarantine" and alert["delivered"] is False and alert["delivery_error"]
