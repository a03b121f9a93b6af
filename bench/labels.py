"""Benchmark: `keel labels` on a store holding a year of predictions, beside one scan of the prediction table.

Late labels come by row id alone, and the prediction table is keyed by (prediction set, row id): finding a label's
predictions reads the whole table. This builds a SQLite store through keel's own write path (a dataset version,
a run and a prediction set per batch, `--sets` batches of `--rows` predictions, ids prefixed by the batch's day as
the demo's flight ids are), writes a labels file for one batch in the middle, and times, alternating, keel's
`attach_labels` (the `keel labels` command's work: read the file, find the predictions, write the labels, measure
the batch) and the floor: one SELECT of those ids' predictions with all the ids in one statement (sqlite3, no
keel). Each attach writes the same labels again (after the first, nothing changes), so the rounds compare alike.
With --index, it then times what an index on prediction(row_id) would cost every batch: keel's write of a new
batch's predictions, `--repeat` times without the index and with it. `--ids uuid` gives every row a random id
instead of one that begins with its batch's day.

Run:  PYTHONPATH=. python bench/labels.py [--sets 365] [--rows 28000] [--repeat 3] [--ids day|uuid] [--index]
See bench/README.md, "## Labels".
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent


def row_ids(kind: str, batch: int, rows: int) -> list[str]:
    if kind == "uuid":
        return [str(uuid.uuid4()) for _ in range(rows)]
    return [f"2013-{1 + batch // 28 % 12}-{1 + batch % 28}-{batch}-{i}" for i in range(rows)]


def build(home: Path, sets: int, rows: int, kind: str) -> tuple[Path, list[str], int]:
    """The store: `sets` batches of `rows` scored rows each; returns the labels file for the middle batch, its ids
    and the model version's id."""
    from keel.core.data.demo import DEMO_CONFIG
    from keel.core.store import records
    from keel.core.workspace import Workspace

    config = home / "keel.toml"
    config.write_text(DEMO_CONFIG)
    ws = Workspace.open(str(config))
    rng = np.random.default_rng(0)
    records.register_dataset(ws, {"id": "t" * 64, "kind": "train", "format": "parquet", "rows": 0,
                                  "artifact_uri": "none"})
    mv = records.register_model(ws, {"model_name": ws.cfg.model, "train_dataset_id": "t" * 64, "params_hash": "p",
                                     "code_hash": "c", "artifact_sha256": "a" * 64, "artifact_uri": "none",
                                     "train_metrics": {}, "positive": "1"})
    middle: list[str] = []
    for s in range(sets):
        ids = scored_batch(ws, mv.id or 0, s, row_ids(kind, s, rows), rng)
        if s == sets // 2:
            middle = ids
    labels = home / "labels.csv"
    pl.DataFrame({"flight_id": middle, "delayed": rng.integers(0, 2, len(middle))}).write_csv(labels)
    return labels, middle, mv.id or 0


def scored_batch(ws: Any, model_version_id: int, batch: int, ids: list[str], rng: np.random.Generator) -> list[str]:
    """One batch's dataset version, run and predictions, written as a pipeline run writes them."""
    from keel.core.store import records

    dataset_id = f"{batch:064d}"
    records.register_dataset(ws, {"id": dataset_id, "kind": "batch", "format": "parquet", "rows": len(ids),
                                  "artifact_uri": "none"})
    run_id = records.start_run(ws, f"batch-{batch}", str(uuid.uuid4()))
    records.record_predictions(ws, dataset_id, model_version_id, ids, rng.random(len(ids)), np.full(len(ids), np.nan),
                               0.5, run_id)
    return ids


def index_cost(ws: Any, db: Path, mv: int, args: argparse.Namespace) -> None:
    """keel's write of a new batch's predictions without and with an index on prediction(row_id)."""
    rng = np.random.default_rng(1)
    batch = args.sets + 1

    def writes() -> list[float]:
        nonlocal batch
        spent = []
        for _ in range(args.repeat):
            ids = row_ids(args.ids, batch, args.rows)
            start = time.perf_counter()
            scored_batch(ws, mv, batch, ids, rng)
            spent.append(time.perf_counter() - start)
            batch += 1
        return spent

    without = writes()
    with sqlite3.connect(db) as conn:
        start = time.perf_counter()
        conn.execute("CREATE INDEX bench_prediction_row_id ON prediction (row_id)")
        built = time.perf_counter() - start
    indexed = writes()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX bench_prediction_row_id")
    print(f"a new batch's predictions written, {args.ids} ids: without an index on row_id "
          f"{', '.join(f'{t:.2f}' for t in without)} s; with it {', '.join(f'{t:.2f}' for t in indexed)} s "
          f"(the index built in {built:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=365, help="batches of predictions in the store")
    parser.add_argument("--rows", type=int, default=28_000, help="predictions per batch (the demo's month: 28k)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ids", choices=["day", "uuid"], default="day", help="row ids: the batch's day first, or random")
    parser.add_argument("--index", action="store_true", help="also time a batch's write with an index on row_id")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="keel-labels-") as folder:
        home = Path(folder)
        os.environ.update(KEEL_HOME=str(home / ".keel"), DO_NOT_TRACK="1")
        began = time.perf_counter()
        labels, ids, mv = build(home, args.sets, args.rows, args.ids)
        from keel.core.monitoring.labels import attach_labels
        from keel.core.workspace import Workspace

        ws = Workspace.open(str(home / "keel.toml"))
        db = home / ".keel" / "keel.db"
        print(f"store: {args.sets} batches x {args.rows:,} predictions = {args.sets * args.rows:,} rows, "
              f"{db.stat().st_size / 2**20:.0f} MiB, built in {time.perf_counter() - began:.0f} s", flush=True)
        keel_s: list[float] = []
        floor_s: list[float] = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = attach_labels(ws, str(labels))
            keel_s.append(time.perf_counter() - start)
            assert out["matched_rows"] == len(ids), out
            start = time.perf_counter()
            with sqlite3.connect(db) as conn:
                marks = ",".join("?" * len(ids))
                found = conn.execute(f"SELECT s.dataset_id, p.row_id, p.actual FROM prediction p JOIN prediction_set s "
                                     f"ON s.id = p.set_id WHERE p.row_id IN ({marks})", ids).fetchall()
            floor_s.append(time.perf_counter() - start)
            assert len(found) == len(ids)
        k, f = statistics.median(keel_s), statistics.median(floor_s)
        print(f"keel labels (attach_labels), {len(ids):,} labels: median {k:.2f} s  ({', '.join(f'{t:.2f}' for t in keel_s)})")
        print(f"floor: one SELECT of those ids:       median {f:.2f} s  ({', '.join(f'{t:.2f}' for t in floor_s)})")
        print(f"ratio {k / f:.2f}x")
        if args.index:
            index_cost(ws, db, mv, args)


if __name__ == "__main__":
    main()
