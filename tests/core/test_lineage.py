"""Lineage, trace and batch scoring on the real store."""

from __future__ import annotations

import polars as pl
import pytest
import registry_world as world

from keel.core.errors import NotFound
from keel.core.model.scoring import score_batch
from keel.core.registry import transactions as registry
from keel.core.registry.lineage import lineage, trace


@pytest.fixture
def ws(keel_home):
    ws = world.workspace(world.build(keel_home.parent, versions=2))
    registry.promote(ws, "churn", 1, "first model", actor="alice")
    registry.open_review(ws, "churn", 2, ["AUC change is ambiguous"], None, None, actor="keel (pipeline)")
    registry.approve(ws, "churn", 2, "checked the slices", actor="bob")
    return ws


def test_lineage_shows_run_data_sources_params_code_metrics_and_deciders(ws, keel_home):
    info = lineage(ws.engine, "churn", 2)
    assert info["status"] == "production" and info["run"]["run_id"]
    train = info["train_dataset"]
    assert train["kind"] == "train" and train["parents"][0]["source"].endswith("batch.parquet")
    assert info["holdout_dataset"]["parents"][0]["id"] == train["parents"][0]["id"]
    assert info["params"]["seed"] == 2 and len(info["code_hash"]) == 64 and len(info["artifact"]["sha256"]) == 64
    assert {m["name"] for m in info["metrics"]} >= {"roc_auc", "accuracy"}
    assert [(d["action"], d["actor"]) for d in info["decisions"]] == [
        ("review", "keel (pipeline)"), ("approve", "bob"), ("promote", "bob")]
    assert info["review"]["decisions"][0]["reason"] == "checked the slices"
    assert info["production_periods"][0]["until"] is None
    with pytest.raises(NotFound):
        lineage(ws.engine, "churn", 9)


def test_score_stores_every_prediction_and_trace_walks_back_to_the_approval(ws, keel_home):
    src = world.make_batch(keel_home.parent, n=200, seed=5, name="new.parquet")
    batch = keel_home.parent / "new.csv"
    pl.read_parquet(src).drop("y").write_csv(batch)  # unlabelled, as inference batches are
    out = keel_home.parent / "preds.parquet"
    summary = score_batch(ws, batch, out)
    assert summary["scored"] == 200 and summary["model_version"] == 2
    written = pl.read_parquet(out)
    assert written.height == 200 and set(written["model_version"]) == {2} and written["row_id"][0] == "r5-0"
    again = score_batch(ws, batch)  # the same batch and model: no duplicate predictions
    assert again["dataset_version"] == summary["dataset_version"]

    [t] = trace(ws.engine, "r5-7", batch=summary["dataset_version"][:10])
    assert t["model"]["version"] == 2 and 0 <= t["score"] <= 1
    assert t["batch"]["source"].endswith("new.csv")
    assert t["prediction_run"]["flow"] == "score" and t["prediction_run"]["status"] == "scored"
    assert t["training_data"]["parents"][0]["source"].endswith("batch.parquet")
    assert t["training_run"]["run_id"] == lineage(ws.engine, "churn", 2)["run"]["run_id"]
    assert t["approval"]["action"] == "promote" and t["approval"]["actor"] == "bob"
    assert [a["actor"] for a in t["approval"]["approvals"]] == ["bob"]
    assert trace(ws.engine, "r5-7", batch=str(batch))[0]["score"] == t["score"], "--batch takes the file too"
    with pytest.raises(NotFound):
        trace(ws.engine, "no-such-row")


def test_score_without_production_is_a_clear_error(keel_home):
    ws = world.workspace(world.build(keel_home.parent, versions=1))
    with pytest.raises(NotFound, match="no production version"):
        score_batch(ws, keel_home.parent / "batch.parquet")
