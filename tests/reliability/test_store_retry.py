"""The store's units of work run again, with backoff, after a transient failure of a real store (SQLite locked by
another connection, a PostgreSQL backend terminated), and never after a lasting one (a broken unique key)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from postgres_db import fresh_database
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from keel.core.errors import StoreError
from keel.core.store.engine import dispose_engines, get_engine, session_scope, unit_of_work
from keel.core.store.models import DatasetVersion


@pytest.fixture(autouse=True)
def _fresh_engines():
    yield
    dispose_engines()


def _dataset(i: int) -> DatasetVersion:
    return DatasetVersion(id=f"{i:064d}", kind="batch", format="parquet", rows=1, artifact_uri=f"file:///{i}")


def _hold_lock(path: Path, seconds: float, taken: threading.Event) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    taken.set()
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


def _locked_write(tmp_path: Path, hold: float):
    """A unit that writes a row to a SQLite store (busy timeout 0.2 s) while another connection holds its write
    lock for `hold` seconds; returns (the unit's outcome or error, how many times it ran)."""
    url = f"sqlite:///{tmp_path / 'keel.db'}?timeout=0.2"
    engine = get_engine(url)
    calls = []

    @unit_of_work
    def add_row() -> str:
        calls.append(1)
        with session_scope(engine) as session:
            session.add(_dataset(1))
        return "written"

    taken = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(tmp_path / "keel.db", hold, taken))
    holder.start()
    taken.wait()
    try:
        outcome: object = add_row()
    except StoreError as exc:
        outcome = exc
    holder.join()
    return outcome, len(calls)


def test_a_write_to_a_sqlite_store_locked_longer_than_its_busy_timeout_is_tried_again_and_lands(
        tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_STORE_RETRIES", "6")
    outcome, calls = _locked_write(tmp_path, hold=1.5)
    assert outcome == "written" and calls > 1
    with Session(get_engine(f"sqlite:///{tmp_path / 'keel.db'}?timeout=0.2")) as s:
        assert s.get(DatasetVersion, f"{1:064d}") is not None


def test_with_retries_off_a_locked_sqlite_store_fails_the_unit_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_STORE_RETRIES", "0")
    outcome, calls = _locked_write(tmp_path, hold=1.0)
    assert isinstance(outcome, StoreError) and calls == 1
    assert "is locked by another writer" in str(outcome) and "\n" not in str(outcome)


def test_a_unit_gives_up_after_its_retries_saying_how_long_it_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_STORE_RETRIES", "2")
    outcome, calls = _locked_write(tmp_path, hold=6.0)
    assert isinstance(outcome, StoreError) and calls == 3
    assert "is locked by another writer" in str(outcome) and "gave up after 3 tries" in str(outcome)
    assert not outcome.transient  # final: the units around this one do not try it again


def test_a_broken_unique_key_is_not_tried_again(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    with session_scope(engine) as session:
        session.add(_dataset(1))
    calls = []

    @unit_of_work
    def add_again() -> None:
        calls.append(1)
        with session_scope(engine) as session:
            session.add(_dataset(1))

    with pytest.raises(IntegrityError):
        add_again()
    assert calls == [1]


def test_an_exhausted_inner_unit_is_not_tried_again_by_the_unit_around_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_STORE_RETRIES", "1")
    url = f"sqlite:///{tmp_path / 'keel.db'}?timeout=0.1"
    engine = get_engine(url)
    inner_calls, outer_calls = [], []

    @unit_of_work
    def inner() -> None:
        inner_calls.append(1)
        with session_scope(engine) as session:
            session.add(_dataset(len(inner_calls)))

    @unit_of_work
    def outer() -> None:
        outer_calls.append(1)
        inner()

    taken = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(tmp_path / "keel.db", 4.0, taken))
    holder.start()
    taken.wait()
    with pytest.raises(StoreError, match="gave up after 2 tries"):
        outer()
    holder.join()
    assert (len(outer_calls), len(inner_calls)) == (1, 2)


def test_a_unit_whose_postgresql_backend_is_terminated_mid_query_runs_again_on_a_new_connection(monkeypatch):
    monkeypatch.setenv("KEEL_STORE_RETRIES", "3")
    with fresh_database("keel_retry") as url:
        engine = get_engine(url)
        name = url.rsplit("/", 1)[1]
        pids = []

        @unit_of_work
        def slow_write() -> None:
            with session_scope(engine) as session:
                pids.append(session.execute(text("select pg_backend_pid()")).scalar_one())
                session.add(_dataset(len(pids)))
                session.flush()
                session.execute(text("select pg_sleep(1.5)"))

        from sqlalchemy import create_engine

        admin = create_engine(os.environ["KEEL_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")

        def terminate_first() -> None:
            while not pids:
                time.sleep(0.01)
            time.sleep(0.3)
            with admin.connect() as db:
                db.execute(text("select pg_terminate_backend(:pid) from pg_stat_activity where datname = :db "
                                "and pid = :pid"), {"pid": pids[0], "db": name})

        killer = threading.Thread(target=terminate_first)
        killer.start()
        slow_write()
        killer.join()
        admin.dispose()
        assert len(pids) == 2 and pids[0] != pids[1]
        with Session(engine) as s:  # the first try rolled back with its connection; the second committed
            assert s.get(DatasetVersion, f"{1:064d}") is None and s.get(DatasetVersion, f"{2:064d}") is not None


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_a_bad_store_retries_setting_is_one_line_naming_it(value, tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "KEEL_HOME": str(tmp_path / ".keel"), "KEEL_STORE_RETRIES": value}
    out = subprocess.run([sys.executable, "-m", "keel", "runs"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "KEEL_STORE_RETRIES" in out.stderr and "Traceback" not in out.stderr
