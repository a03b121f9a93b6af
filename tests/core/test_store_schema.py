"""The migrations build exactly the tables the models declare, and an older store is upgraded in place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from keel.core.data.batches import time_span, utc_times
from keel.core.store.migrate import _config, current_revision, head_revision, upgrade
from keel.core.store.models import SQLModel


def test_migrations_at_head_match_the_models(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    assert current_revision(engine) == head_revision() == "0005"
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diffs == [], f"models and migrations differ: add a migration (scripts/new-migration.sh): {diffs}"


def test_a_store_at_0001_is_upgraded_keeping_its_rows(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO dataset_version (id, kind, format, rows, labelled_rows, artifact_uri, created_at)"
                          " VALUES ('abc', 'batch', 'csv', 3, 3, '/x', '2026-11-01 00:00:00')"))
    assert "data_to" not in {c["name"] for c in inspect(engine).get_columns("dataset_version")}
    upgrade(engine)
    assert current_revision(engine) == "0005"
    assert {"data_from", "data_to"} <= {c["name"] for c in inspect(engine).get_columns("dataset_version")}
    assert "batch_time" in {c["name"] for c in inspect(engine).get_columns("metric_point")}
    assert "code_hash" in {c["name"] for c in inspect(engine).get_columns("pipeline_run")}
    assert "registry_commit" in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, rows, data_to FROM dataset_version")).all() == [("abc", 3, None)]


@contextmanager
def _store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        from tests.postgres_db import fresh_database

        with fresh_database() as url:
            yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_predictions_stored_before_sets_existed_are_kept_row_for_row_both_ways(kind, tmp_path):
    with _store_url(kind, tmp_path) as url:
        engine = create_engine(url)
        try:
            _predictions_kept_across_0005(engine)
        finally:
            engine.dispose()


def _predictions_kept_across_0005(engine: Engine) -> None:
    cfg = _config()
    old = [("d1", "r1", 1, 0.25, 0, 1, "run-a"), ("d1", "r2", 1, 0.75, 1, None, "run-a"),
           ("d1", "r1", 2, 0.5, 1, 1, "run-b"), ("d2", "r1", 1, 0.125, 0, None, "run-c")]
    models = [{"id": m, "v": m, "p": f"p{m}"} for m in (1, 2)]
    columns = "dataset_id, row_id, model_version_id, score, label, actual, run_id"
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(text("INSERT INTO dataset_version (id, kind, format, rows, labelled_rows, artifact_uri, created_at)"
                          " VALUES ('t', 'train', 'parquet', 1, 1, '/x', '2026-11-01 00:00:00')"))
        conn.execute(text("INSERT INTO model_version (id, model_name, version, status, train_dataset_id, params_hash,"
                          " code_hash, num_boost_round, artifact_uri, artifact_sha256, created_at) VALUES (:id, 'm', :v, 'candidate',"
                          " 't', :p, 'c', 0, '/x', 's', '2026-11-01 00:00:00')"), models)
        conn.execute(text(f"INSERT INTO prediction ({columns}) VALUES (:d, :r, :m, :s, :l, :a, :u)"),
                     [dict(zip("drmslau", row, strict=True)) for row in old])
    upgrade(engine)
    joined = ("SELECT s.dataset_id, p.row_id, s.model_version_id, p.score, p.label, p.actual, s.run_id "
              "FROM prediction p JOIN prediction_set s ON s.id = p.set_id")
    with engine.connect() as conn:
        assert sorted(conn.execute(text(joined)).all()) == sorted(old)
        assert conn.execute(text("SELECT count(*) FROM prediction_set")).scalar_one() == 3
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
        assert sorted(conn.execute(text(f"SELECT {columns} FROM prediction")).all()) == sorted(old)


@pytest.mark.parametrize("column", [
    pl.Series("t", ["2013-07-01T05:00:00Z", "2013-07-31T23:00:00Z", None]),  # ISO strings with a zone
    pl.Series("t", ["2013-07-01 05:00:00", "2013-07-31 23:00:00", None]),
    pl.Series("t", [datetime(2013, 7, 1, 5), datetime(2013, 7, 31, 23), None]),
    pl.Series("t", [datetime(2013, 7, 1, 1), datetime(2013, 7, 31, 19), None]).dt.replace_time_zone("America/New_York"),
])
def test_time_span_reads_times_as_utc(column):
    assert time_span(pl.DataFrame([column]), "t") == (datetime(2013, 7, 1, 5, tzinfo=UTC), datetime(2013, 7, 31, 23, tzinfo=UTC))


def test_repeated_time_strings_each_read_as_they_would_be_alone():
    column = pl.Series("t", ["2013-07-01T05:00:00Z", None, "2013-07-01T05:00:00Z", "soon", "2013-07-02T06:00:00Z"] * 3)
    assert utc_times(pl.DataFrame([column]), "t").to_list() == [
        datetime(2013, 7, 1, 5), None, datetime(2013, 7, 1, 5), None, datetime(2013, 7, 2, 6)] * 3


def test_time_span_is_empty_for_what_is_not_a_time():
    frame = pl.DataFrame({"t": ["soon", "later"], "n": [1, 2]})
    assert time_span(frame, "t") == (None, None)
    assert time_span(frame, "n") == (None, None)
    assert time_span(frame, "missing") == (None, None)
    assert time_span(frame, None) == (None, None)


def _open_store_when_told(url: str, start, results) -> None:
    from keel.core.store.engine import get_engine

    start.wait()
    try:
        get_engine(url)
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def _open_from_processes_at_once(url: str, processes: int = 4) -> list[str]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_open_store_when_told, args=(url, start, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    import time

    time.sleep(3)  # every process imported keel and waits at the start line
    start.set()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    return outcomes


def test_a_new_sqlite_store_opened_by_several_processes_at_once_is_migrated_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert _open_from_processes_at_once(url) == ["ok"] * 4
    assert current_revision(create_engine(url)) == head_revision()


def test_a_new_sqlite_store_another_process_holds_for_a_moment_is_opened_once_it_lets_go(tmp_path):
    import sqlite3
    import threading

    from keel.core.store.engine import get_engine

    path = tmp_path / "store.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process writing to the new file, as one that creates the store does
    other.execute("CREATE TABLE t (x)")
    threading.Timer(0.5, other.execute, ["COMMIT"]).start()
    engine = get_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert current_revision(engine) == head_revision()
    other.close()


def test_a_new_postgresql_store_opened_by_several_processes_at_once_is_migrated_once():
    from tests.postgres_db import fresh_database

    with fresh_database() as url:
        assert _open_from_processes_at_once(url) == ["ok"] * 4
        engine = create_engine(url)
        assert current_revision(engine) == head_revision()
        engine.dispose()
