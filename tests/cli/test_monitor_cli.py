"""keel labels, keel alerts / alerts ack and keel metrics serve on a store built by real pipeline runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import polars as pl
import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from keel.core.data.demo import DEMO_CONFIG
from keel.core.store.models import MetricPoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]  # a Prefect server, real pipeline runs


def _keel(*args: str) -> tuple[int, str, str]:
    from keel.cli.main import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_delayed_labels_alerts_ack_and_prometheus(demo_slices, keel_home, tmp_path):
    from keel.core.workspace import open_store
    from keel.flows.run_pipeline import run_pipeline

    config = tmp_path / "keel.toml"
    config.write_text(DEMO_CONFIG + "\n[alerts]\non_feature_drift = true  # the per-feature rule, as an option\n")
    run_pipeline(batch=str(demo_slices[0]), config=str(config))
    labelled = pl.read_parquet(demo_slices[1])
    labelled.drop("delayed").write_parquet(tmp_path / "unlabelled.parquet")
    scored = run_pipeline(batch=str(tmp_path / "unlabelled.parquet"), config=str(config))
    assert scored["metrics"] is None and scored["estimate"]["accuracy"] > 0.5, "scored and estimated, no labels yet"

    # labels arrive later: half of them now, plus ids nobody scored
    late = labelled.select("flight_id", "delayed").filter(pl.col("delayed").is_not_null())
    extra = pl.DataFrame({"flight_id": ["no-such-flight-1", "no-such-flight-2"], "delayed": [1, 0]},
                         schema=late.schema)
    pl.concat([late, extra]).write_csv(tmp_path / "labels.csv")
    code, out, err = _keel("labels", str(tmp_path / "labels.csv"), "--config", str(config), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["unknown_ids"] == 2 and result["matched_rows"] == late.height
    (batch,) = result["batches"]
    assert batch["dataset_id"] == scored["dataset_version"] and batch["labelled"] == late.height
    assert set(batch["estimate"]) >= {"accuracy", "roc_auc"}, "the estimate is shown beside the realised values"
    with Session(open_store()) as s:
        realised = {p.name: p for p in s.exec(select(MetricPoint).where(
            MetricPoint.dataset_id == scored["dataset_version"], MetricPoint.scope == "batch"))}
    assert realised["accuracy"].value == pytest.approx(batch["metrics"]["accuracy"])
    assert realised["roc_auc"].lower is not None and realised["roc_auc"].alert == ("roc_auc" in batch["below_threshold"])

    code, out, _ = _keel("labels", str(tmp_path / "labels.csv"), "--config", str(config))
    assert code == 0 and "0 updated" in out and "2 unknown id(s)" in out, "attaching twice changes nothing"

    # the estimate against what the labels showed, the miss explained
    code, out, err = _keel("metrics", "estimates", "flights-delay", "--config", str(config), "--json")
    assert code == 0, err
    record = json.loads(out)
    (row,) = record["rows"]
    assert row["dataset_id"] == scored["dataset_version"] and row["calibration"] == "holdout"
    assert row["estimated"] == pytest.approx(scored["estimate"]["accuracy"])
    assert row["realised"] == pytest.approx(batch["metrics"]["accuracy"])
    assert row["realised_rate"] == pytest.approx(late["delayed"].mean())
    assert row["expected_rate"] == pytest.approx(scored["estimate"]["expected_positive_rate"])
    assert record["mae"] == pytest.approx(abs(row["miss"]))
    if abs(row["miss"]) > record["tolerance"]:
        assert "calibrated on the training holdout" in row["why"], row
    else:
        assert row["why"] == []
    code, out, _ = _keel("metrics", "estimates", "flights-delay", "--config", str(config))
    assert code == 0 and "unlabelled.parquet" in out and "mean absolute miss" in out
    code, out, _ = _keel("metrics", "estimates", "no-such-model", "--config", str(config))
    assert code == 0 and "no batch of no-such-model" in out

    (tmp_path / "bad.csv").write_text("flight_id,colour\nx,red\n")
    code, _, err = _keel("labels", str(tmp_path / "bad.csv"), "--config", str(config))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "column 'delayed' is missing" in err

    # alerts: the per-feature rule (switched on) fires on the drifted weather, the realised drop once labels came
    code, out, _ = _keel("alerts", "--json")
    alerts = json.loads(out)
    assert code == 0 and {"feature_drift", "drop"} <= {a["rule"] for a in alerts}
    drop = next(a for a in alerts if a["rule"] == "drop")
    assert drop["dataset_id"] == scored["dataset_version"] and drop["delivered"] is False
    code, out, _ = _keel("alerts", "ack", str(drop["id"]), "--reason", "labels late, looking")
    assert code == 0 and "acknowledged" in out
    code, out, _ = _keel("alerts", "--json")
    assert drop["id"] not in {a["id"] for a in json.loads(out)}
    code, out, _ = _keel("alerts", "--all")
    assert code == 0 and "drop" in out
    code, _, err = _keel("alerts", "ack", "9999")
    assert code == 2 and "no alert 9999" in err

    # Prometheus: a real `keel metrics serve` process, scraped over loopback
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "keel", "metrics", "serve", "--port", str(port)],
                            env={**os.environ, "KEEL_HOME": str(keel_home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        body = ""
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        line = next(x for x in body.splitlines() if x.startswith("keel_metric{") and 'scope="batch"' in x
                    and 'metric="accuracy"' in x)
        assert float(line.rsplit(" ", 1)[1]) == pytest.approx(batch["metrics"]["accuracy"])
        assert 'model="flights-delay"' in line and 'version="1"' in line
        assert any(x.startswith("keel_alerts_open{") and 'rule="feature_drift"' in x for x in body.splitlines())
        assert not any('rule="drop"' in x for x in body.splitlines() if x.startswith("keel_alerts_open{"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
