"""The inbox: new batches in batch-time order, then arrival, then name; known and repeated bytes skipped."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import polars as pl
import pytest

from keel.core.errors import DataError
from keel.core.pipeline.inbox import list_inbox, new_batches
from keel.core.workspace import Workspace


def _batch(folder, name: str, day: int, arrived: int, rows: int = 5):
    frame = pl.DataFrame({"ts": [datetime(2024, 1, day) + timedelta(hours=i) for i in range(rows)],
                          "x": list(range(rows)), "y": [i % 2 for i in range(rows)]})
    path = folder / name
    frame.write_parquet(path) if name.endswith(".parquet") else frame.write_csv(path)
    os.utime(path, (arrived, arrived))
    return path


def test_batches_are_ordered_by_batch_time_then_arrival_then_name(tmp_path):
    _batch(tmp_path, "c.parquet", day=3, arrived=100)
    _batch(tmp_path, "a.parquet", day=5, arrived=50)
    _batch(tmp_path, "b.csv", day=3, arrived=90, rows=6)  # same day, but its newest row is later
    _batch(tmp_path, "d.parquet", day=1, arrived=300)
    (tmp_path / "notes.txt").write_text("not a batch")
    (tmp_path / ".partial.parquet").write_bytes(b"being written")
    names = [b.path.rsplit("/", 1)[-1] for b in list_inbox(str(tmp_path), "ts")]
    assert names == ["d.parquet", "c.parquet", "b.csv", "a.parquet"]
    # without a timestamp column: arrival, then name
    names = [b.path.rsplit("/", 1)[-1] for b in list_inbox(str(tmp_path), None)]
    assert names == ["a.parquet", "b.csv", "c.parquet", "d.parquet"]


def test_known_batches_and_repeated_bytes_are_skipped(tmp_path, keel_home):
    from keel.core.store import records

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = _batch(inbox, "1.parquet", day=1, arrived=10)
    _batch(inbox, "2.parquet", day=2, arrived=20)
    (inbox / "2-again.parquet").write_bytes((inbox / "2.parquet").read_bytes())
    config = tmp_path / "keel.toml"
    config.write_text('model = "m"\ntarget = "y"\ntimestamp = "ts"\n')
    ws = Workspace.open(config)
    assert [b.path.rsplit("/", 1)[-1] for b in new_batches(ws, str(inbox))] == ["1.parquet", "2.parquet"]
    batch = next(b for b in list_inbox(str(inbox), "ts") if b.path.endswith("1.parquet"))
    run = records.start_run(ws, str(first), None)
    records.update_run(ws, run, batch_id=batch.sha256)
    records.finish_run(ws, run, "completed")
    assert [b.path.rsplit("/", 1)[-1] for b in new_batches(ws, str(inbox))] == ["2.parquet"]


def test_an_inbox_that_cannot_be_listed_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot be listed"):
        list_inbox(str(tmp_path / "missing"), None)
