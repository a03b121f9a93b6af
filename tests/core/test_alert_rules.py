"""The default alert rules fire on model impact: importance-weighted drift, prediction drift, estimated drop.

Real drift tests on constructed frames, the real rules, the real SQLite store; the noisy per-feature rule
only when keel.toml asks for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sqlmodel import Session, select

from keel.core.config import AlertsConfig, MonitorConfig, parse_config
from keel.core.drift.detect import detect_drift, score_drift
from keel.core.monitoring import alerts, rules
from keel.core.pipeline.run import drift_summary
from keel.core.store.models import Alert, AlertCheck
from keel.core.workspace import Workspace

N = 4000
IMPORTANCE = {"relied_on": 0.9, "ignored": 0.1}  # the model's gain shares


def frame(seed: int, relied_on: float = 0.0, ignored: float = 0.0) -> pl.DataFrame:
    """Two numeric features, each shifted by the given number of standard deviations."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"relied_on": rng.normal(relied_on, 1, N), "ignored": rng.normal(ignored, 1, N)})


REFERENCE = frame(0)


def drift_of(current: pl.DataFrame, scores: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    report = detect_drift(REFERENCE, current, ["relied_on", "ignored"], [], importance=IMPORTANCE).to_dict()
    if scores is not None:
        report["prediction"] = score_drift(*scores).to_dict()
    return drift_summary(report)


def summary(drift: dict | None = None, **extra) -> dict:
    return {"status": "completed", "batch": "b.parquet", "drift": drift, **extra}


def verdicts(s: dict, baseline: dict | None = None, **alert_settings) -> dict[str, bool]:
    checks = rules.checks(s, baseline, IMPORTANCE, MonitorConfig(), AlertsConfig(**alert_settings))
    return {c.rule: c.breached for c in checks}


def test_drift_of_a_feature_the_model_ignores_does_not_breach_the_drift_rule():
    drift = drift_of(frame(1, ignored=2.0))
    assert drift["drifted"] == ["ignored"], "the feature drifted by the [drift] tests"
    got = verdicts(summary(drift))
    assert got["feature_drift"] is True and got["drift"] is False
    assert rules.weighted_drift(drift["features"], IMPORTANCE) == pytest.approx(0.2, abs=0.05)


def test_drift_of_the_feature_the_model_relies_on_breaches_the_drift_rule():
    drift = drift_of(frame(1, relied_on=1.0))
    assert drift["drifted"] == ["relied_on"]
    assert verdicts(summary(drift))["drift"] is True
    assert rules.weighted_drift(drift["features"], IMPORTANCE) == pytest.approx(0.9, abs=0.1)
    assert verdicts(summary(drift), drift_threshold=1.5)["drift"] is False, "the threshold is the setting's"


def test_without_importance_nothing_weighs_so_the_drift_rule_stays_quiet():
    drift = drift_of(frame(1, relied_on=3.0))
    checks = rules.checks(summary(drift), None, None, MonitorConfig(), AlertsConfig())
    assert {c.rule: c.breached for c in checks}["drift"] is False


def test_prediction_drift_fires_on_a_large_shift_of_the_scores_only():
    rng = np.random.default_rng(3)
    reference = rng.beta(2, 5, N)
    small = drift_of(frame(1), (reference, rng.beta(2, 5, N) + 0.03))
    large = drift_of(frame(1), (reference, rng.beta(2, 5, N) + 0.1))
    assert small["prediction"]["drifted"], "a small shift is still significant on 4000 rows"
    assert small["prediction"]["effect_size"] < AlertsConfig().prediction_effect < large["prediction"]["effect_size"]
    assert verdicts(summary(small))["prediction_drift"] is False
    assert verdicts(summary(large))["prediction_drift"] is True


def test_estimated_drop_breaches_below_the_training_value_by_more_than_max_drop():
    base = {"roc_auc": 0.80}
    assert verdicts(summary(estimate={"roc_auc": 0.77}), base)["estimated_drop"] is True
    assert verdicts(summary(estimate={"roc_auc": 0.79}), base)["estimated_drop"] is False
    assert verdicts(summary(metrics={"roc_auc": 0.70}), base)["drop"] is True


def workspace(keel_home: Path, alerts_section: str = "") -> Workspace:
    path = keel_home.parent / "keel.toml"
    path.write_text(f'model = "m"\ntarget = "y"\n[alerts]\n{alerts_section}\n')
    return Workspace.open(path)


def evaluate_month(ws: Workspace, i: int, current: pl.DataFrame) -> set[str]:
    checks = rules.checks(summary(drift_of(current)), None, IMPORTANCE, ws.cfg.monitor, ws.cfg.alerts)
    return {a["rule"] for a in alerts.evaluate(ws, f"run-{i}", f"batch-{i}", checks)}


def test_by_default_only_drift_the_model_relies_on_pages(keel_home):
    ws = workspace(keel_home)
    assert evaluate_month(ws, 0, frame(1, ignored=2.0)) == set()
    assert evaluate_month(ws, 1, frame(2, relied_on=1.0)) == {"drift"}
    with Session(ws.engine) as s:
        assert {c.rule for c in s.exec(select(AlertCheck))} == {"drift", "failure", "quarantine"}, \
            "the per-feature rule is off: nothing recorded for it"
        (alert,) = s.exec(select(Alert)).all()
    assert alert.dataset_id == "batch-1" and "relied_on" in alert.message and "90%" in alert.message


def test_the_per_feature_rule_pages_on_any_drifted_feature_when_switched_on(keel_home):
    ws = workspace(keel_home, "on_feature_drift = true\non_drift = false")
    assert evaluate_month(ws, 0, frame(1, ignored=2.0)) == {"feature_drift"}
    assert evaluate_month(ws, 1, frame(2)) == set(), "no drift, no page"
    with Session(ws.engine) as s:
        (alert,) = s.exec(select(Alert)).all()
    assert alert.severity == "info" and "ignored" in alert.message


@pytest.mark.parametrize(("section", "key"), [
    ("drift_threshold = 0", "alerts.drift_threshold"),
    ("drift_threshold = -0.5", "alerts.drift_threshold"),
    ("drift_threshold = nan", "alerts.drift_threshold"),
    ('drift_threshold = "high"', "alerts.drift_threshold"),
    ("prediction_effect = 0", "alerts.prediction_effect"),
    ("prediction_effect = inf", "alerts.prediction_effect"),
    ('on_feature_drift = "sometimes"', "alerts.on_feature_drift"),
    ('on_prediction_drift = 2', "alerts.on_prediction_drift"),
])
def test_bad_alert_settings_are_refused_at_load_naming_the_key(tmp_path, section, key):
    from keel.core.config import load_config
    from keel.core.errors import ConfigError

    path = tmp_path / "keel.toml"
    path.write_text(f'model = "m"\ntarget = "y"\n[alerts]\n{section}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"bad value for '{key}'" in str(info.value) and "\n" not in str(info.value)


def test_a_bad_alert_setting_stops_keel_run_with_one_line_and_exit_2(tmp_path):
    (tmp_path / "keel.toml").write_text('model = "m"\ntarget = "y"\n[alerts]\ndrift_threshold = -1\n')
    (tmp_path / "b.csv").write_text("x,y\n1,0\n2,1\n")
    result = subprocess.run([sys.executable, "-m", "keel", "run", "b.csv"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "KEEL_HOME": str(tmp_path / "h")})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "alerts.drift_threshold" in line and "Traceback" not in result.stderr


def test_the_documented_defaults_switch_the_per_feature_rule_off():
    cfg = parse_config({"model": "m", "target": "y"}).alerts
    assert (cfg.on_drift, cfg.on_prediction_drift, cfg.on_estimated_drop, cfg.on_feature_drift) == (
        True, True, True, False)
    assert json.loads(json.dumps(cfg.model_dump()))["drift_threshold"] == 0.5
