"""The pipeline flow end to end on real data, under a real temporary Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from sqlmodel import Session, col, select
from store_snapshot import snapshot

from keel.core.store.models import (
    PipelineRun,
    Prediction,
    PredictionSet,
    Quarantine,
    StageRun,
)

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def _run(batch: Path, config: Path) -> dict:
    from keel.flows.run_pipeline import run_pipeline

    return run_pipeline(batch=str(batch), config=str(config))


def _engine():
    from keel.core.workspace import open_store

    return open_store()


def _snapshot() -> dict:
    return snapshot(_engine())


def test_pipeline_runs_the_demo_months_and_rerun_changes_nothing(demo_slices, demo_config):
    first = [_run(b, demo_config) for b in demo_slices]
    assert first[0]["decision"] == "promoted" and first[0]["production_version"] == 1
    assert first[0]["drift"] is None  # nothing to compare with before a production model exists
    for s in first[1:]:
        assert s["status"] == "completed"
        assert s["drift"]["features"], "drift is reported per feature"
        names = {f["name"] for f in s["drift"]["features"]}
        assert {"temp", "carrier", "distance"} <= names and not names & {"arr_delay", "dep_delay", "air_time"}
        assert set(s["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "confusion"}
        assert s["decision"] in {"promoted", "rejected", "review", "kept"}
        assert s["reasons"]
    json.dumps(first)  # the summary is what `keel run --json` prints

    before = _snapshot()
    with Session(_engine()) as s:
        stages_before = len(list(s.exec(select(StageRun))))
    again = [_run(b, demo_config) for b in demo_slices]
    after = _snapshot()
    assert after == before, "a rerun leaves the same datasets, models, alias, audit and predictions"
    assert [a["decision"] for a in again] == [f["decision"] for f in first]
    assert all(a["replay_of"] == f["run_id"] for a, f in zip(again, first, strict=True))
    with Session(_engine()) as s:
        rerun_stages = list(s.exec(select(StageRun)))[stages_before:]
    heavy = [st for st in rerun_stages if st.name in ("validate", "score", "drift", "train", "evaluate")
             and st.status == "completed"]
    assert heavy and all(st.cached for st in heavy), "every heavy stage of a rerun is a cache hit"


def test_whole_batch_over_the_bad_row_threshold_is_quarantined(demo_slices, demo_config, tmp_path):
    _run(demo_slices[0], demo_config)
    bad = pl.read_parquet(demo_slices[1]).with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(-10).otherwise(pl.col("distance")).alias("distance"))
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    summary = _run(path, demo_config)
    assert summary["status"] == "quarantined"
    assert "break the data contract" in summary["reasons"][0]
    with Session(_engine()) as s:
        rows = list(s.exec(select(Quarantine).where(Quarantine.dataset_id == summary["dataset_version"])))
        run = s.get(PipelineRun, summary["run_id"])
    assert run.status == "quarantined"
    assert sum(q.whole_batch for q in rows) == 1
    assert sum(1 for q in rows if not q.whole_batch) == 600  # every bad row kept, with its reason
    assert all("distance outside" in q.reason for q in rows if not q.whole_batch)


def test_few_bad_rows_are_quarantined_and_the_rest_goes_on(demo_slices, demo_config, tmp_path):
    _run(demo_slices[0], demo_config)
    bad = pl.read_parquet(demo_slices[1]).with_columns(
        pl.when(pl.int_range(pl.len()) < 7).then(500.0).otherwise(pl.col("wind_speed")).alias("wind_speed"))
    path = tmp_path / "few-bad.parquet"
    bad.write_parquet(path)
    summary = _run(path, demo_config)
    assert summary["status"] == "completed" and summary["quarantined_rows"] == 7
    with Session(_engine()) as s:
        preds = list(s.exec(select(Prediction.row_id).join(PredictionSet, col(PredictionSet.id) == col(Prediction.set_id))
                             .where(PredictionSet.dataset_id == summary["dataset_version"])))
    assert len(preds) == 3000 - 7


def test_any_binary_dataset_works_with_string_labels_nulls_and_unseen_categories(keel_home, tmp_path):
    import numpy as np

    rng = np.random.default_rng(7)

    def batch(n: int, colours: list[str], shift: float) -> pl.DataFrame:
        x = rng.normal(shift, 1, n)
        colour = rng.choice(colours, n)
        logit = 1.5 * x + (colour == "red") - 0.5
        y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "Yes", "No")
        frame = pl.DataFrame({"customer": [f"c{i}" for i in range(n)], "x": x, "colour": colour,
                              "amount": rng.exponential(100, n), "churned": y})
        return frame.with_columns(pl.when(pl.int_range(pl.len()) % 17 == 0).then(None)
                                  .otherwise(pl.col("amount")).alias("amount"))

    config = tmp_path / "keel.toml"
    config.write_text('model = "churn"\ntarget = "churned"\nid = "customer"\n[retrain]\nevery = 1\ncooldown = 0\n')
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    batch(2000, ["red", "blue"], 0.0).write_csv(first)
    batch(2000, ["red", "blue", "green"], 0.3).write_csv(second)
    s1 = _run(first, config)
    s2 = _run(second, config)
    assert s1["decision"] == "promoted"
    assert s2["status"] == "completed" and s2["metrics"]["roc_auc"] > 0.6
    colour = next(f for f in s2["drift"]["features"] if f["name"] == "colour")
    assert colour["test"] == "chi2"
