"""Big batches: predictions are written in chunks, and every row of a batch of several chunks keeps its own score.

Sizes in the millions are the benchmark's (bench/big.py, bench/README.md "Big batches"): a 1M-row `keel run`
takes minutes on the shared test machine, so this test proves the chunked write on a batch of a few chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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
        rows = conn.execute(text("SELECT p.row_id, p.score, p.label FROM prediction p JOIN prediction_set s "
                                 "ON s.id = p.set_id WHERE s.dataset_id = :d"),
                            {"d": summary["dataset_version"]}).all()
    stored = pl.DataFrame(rows, schema=["row_id", "score", "label"], orient="row").sort("row_id")
    written = pl.read_parquet(out).select("row_id", "score", "label").sort("row_id")
    assert stored.height == n and stored["row_id"].n_unique() == n
    assert stored["row_id"].to_list() == written["row_id"].to_list()
    assert (stored["score"] - written["score"]).abs().max() < 1e-12  # each id beside its own score, at every boundary
    assert stored["label"].cast(pl.Int64).to_list() == written["label"].cast(pl.Int64).to_list()


def test_a_retried_prediction_write_makes_its_rows_again_and_stores_every_one(ws, keel_home):
    from keel.core.errors import StoreError
    from keel.core.store.records import record_predictions

    summary = score_batch(ws, world.make_batch(keel_home.parent, n=10, seed=3, name="small.parquet"))
    with ws.engine.connect() as conn:
        model_id = conn.execute(text("SELECT id FROM model_version WHERE version = 1")).scalar_one()
    n = 3 * PREDICTION_CHUNK

    class Ids(Sequence):  # the first try breaks off at the second chunk, as a dropped connection does
        def __init__(self) -> None:
            self.starts: list[int] = []

        def __len__(self) -> int:
            return n

        def __getitem__(self, part):  # noqa: ANN001, ANN204 - slices only
            self.starts.append(part.start)
            if self.starts == [0, PREDICTION_CHUNK]:
                raise StoreError("the connection to the store was dropped (test)", transient=True)
            return [f"x{i}" for i in range(*part.indices(n))]

    ids = Ids()
    record_predictions(ws, summary["dataset_version"], model_id, ids, np.full(n, 0.5), np.full(n, np.nan), 0.5,
                       summary["run_id"])
    with ws.engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM prediction WHERE row_id LIKE 'x%'")).scalar_one()
    assert ids.starts.count(0) == 2 and stored == n
