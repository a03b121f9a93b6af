"""Late labels attached by row id on a store holding more predictions than one query of ids takes."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pytest
from sqlalchemy import text

from keel.core.data.demo import DEMO_CONFIG
from keel.core.monitoring.labels import CHUNK, attach_labels
from keel.core.store import records
from keel.core.workspace import Workspace


def _scored(ws: Workspace, name: str, ids: list[str], mv: int) -> None:
    dataset_id = name.ljust(64, "0")
    records.register_dataset(ws, {"id": dataset_id, "kind": "batch", "format": "parquet", "rows": len(ids),
                                  "artifact_uri": "none"})
    run_id = records.start_run(ws, name, str(uuid.uuid4()))
    scores = np.random.default_rng(len(ids)).random(len(ids))
    records.record_predictions(ws, dataset_id, mv, ids, scores, np.full(len(ids), np.nan), 0.5, run_id)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, monkeypatch):
    """KEEL_HOME in tmp_path, its store SQLite or a fresh PostgreSQL database."""
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / ".keel"))
    if request.param == "sqlite":
        yield
        return
    from tests.postgres_db import fresh_database

    with fresh_database("keel_labels") as url:
        monkeypatch.setenv("KEEL_DATABASE_URL", url)
        yield


@pytest.mark.usefixtures("store")
def test_every_label_of_a_file_longer_than_one_query_lands_on_every_prediction_of_its_row(tmp_path):
    (tmp_path / "keel.toml").write_text(DEMO_CONFIG)
    ws = Workspace.open(str(tmp_path / "keel.toml"))
    records.register_dataset(ws, {"id": "t" * 64, "kind": "train", "format": "parquet", "rows": 0,
                                  "artifact_uri": "none"})
    mv = records.register_model(ws, {"model_name": ws.cfg.model, "train_dataset_id": "t" * 64, "params_hash": "p",
                                     "code_hash": "c", "artifact_sha256": "a" * 64, "artifact_uri": "none",
                                     "train_metrics": {}, "positive": "1"}).id
    n = CHUNK // 2 + 700  # two batches, their ids together more than one query takes
    march = [f"2013-3-{i}" for i in range(n)]
    april = [f"2013-4-{i}" for i in range(n)] + march[:500]  # 500 rows scored again with April's batch
    _scored(ws, "march", march, mv)
    _scored(ws, "april", april, mv)
    ids = march + april[:n]
    assert len(ids) > CHUNK
    labels = np.arange(len(ids)) % 2
    pl.DataFrame({"flight_id": ids, "delayed": labels}).write_csv(tmp_path / "labels.csv")

    out = attach_labels(ws, str(tmp_path / "labels.csv"))

    assert out["labels"] == len(ids) and out["unknown_ids"] == 0
    assert out["matched_rows"] == out["changed_rows"] == len(ids) + 500, "every prediction of every row id"
    assert sorted(b["labelled"] for b in out["batches"]) == [n, n + 500]
    want = dict(zip(ids, labels.tolist(), strict=True))
    with ws.engine.connect() as db:
        stored = db.execute(text("select row_id, actual from prediction")).fetchall()
    assert len(stored) == len(ids) + 500 and all(actual == want[row] for row, actual in stored)
    again = attach_labels(ws, str(tmp_path / "labels.csv"))
    assert again["matched_rows"] == len(ids) + 500 and again["changed_rows"] == 0
