"""Big batches: predictions are written in chunks, and every row of a batch of several chunks keeps its own score.

Sizes in the millions are the benchmark's (bench/big.py, bench/README.md "Big batches"): a 1M-row `keel run`
takes minutes on the shared test machine, so this test proves the chunked write on a batch of a few chunks.
"""

from __future__ import annotations

import polars as pl
import pytest
import registry_world as world
from sqlalchemy import text

from keel.core.model.scoring import score_batch
from keel.core.registry import transactions as registry
from keel.core.store.records import PREDICTION_CHUNK


@pytest.fixture
def ws(keel_home):
    ws = world.workspace(world.build(keel_home.parent, versions=1))
    registry.promote(ws, "churn", 1, "first model", actor="alice")
    return ws


def test_a_batch_of_several_prediction_chunks_stores_every_row_with_its_own_score(ws, keel_home):
    n = 2 * PREDICTION_CHUNK + 1001
    batch = world.make_batch(keel_home.parent, n=n, seed=7, name="big.parquet")
    out = keel_home.parent / "preds.parquet"
    summary = score_batch(ws, batch, out)
    assert summary["scored"] == n
    with ws.engine.connect() as conn:
        rows = conn.execute(text("SELECT row_id, score, label FROM prediction WHERE dataset_id = :d"),
                            {"d": summary["dataset_version"]}).all()
    stored = pl.DataFrame(rows, schema=["row_id", "score", "label"], orient="row").sort("row_id")
    written = pl.read_parquet(out).select("row_id", "score", "label").sort("row_id")
    assert stored.height == n and stored["row_id"].n_unique() == n
    assert stored["row_id"].to_list() == written["row_id"].to_list()
    assert (stored["score"] - written["score"]).abs().max() < 1e-12  # each id beside its own score, at every boundary
    assert stored["label"].cast(pl.Int64).to_list() == written["label"].cast(pl.Int64).to_list()
