"""Engine and session handling: SQLite (WAL) by default, PostgreSQL through KEEL_DATABASE_URL.

This is the store's error boundary: an operational error of SQLAlchemy or the driver on an engine
made here (in any session, bare read, migration or bulk insert: the store locked, a connection
dropped or refused, a full disk) reaches keel as one StoreError line naming the store, through
keel.core.errors' store mapping. Integrity errors stay SQLAlchemy's: callers whose unique keys carry
idempotency or a race handle them. ``sqlite:///path?timeout=5`` sets how many seconds a writer waits
for another's lock (default 30).

It is also where a transient failure is tried again: a function that opens its own session (a unit of
work, marked ``@unit_of_work``) runs again from the top, with backoff, when the connection dropped, the
server could not be reached or SQLite stayed locked (KEEL_STORE_RETRIES times, default 6). Every write is
keyed by a natural key, so running a unit again is safe; integrity errors and keel's own verdicts are never
retried. The innermost unit retries; once its retries are spent the error is final for the units around it.
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, ExceptionContext, make_url
from sqlmodel import Session, SQLModel, create_engine

from keel.core.errors import KeelError, StoreError, map_exceptions, store_errors, translated

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("keel.store")
_ENGINES: dict[str, Engine] = {}
SQLITE_TIMEOUT = 30.0  # seconds a connection waits for another writer's lock


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    _wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: bulk inserts keep their index pages in memory
    cur.close()


def _wal(cur: Any) -> None:
    """WAL mode. Switching a new file to it needs the file to itself, and SQLite does not wait for that (its busy
    handler is not called): of several processes opening a new store at once, some found it "locked". Tried again
    until the connection's busy timeout has passed."""
    deadline = time.monotonic() + cur.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def get_engine(url: str) -> Engine:
    """One engine per URL per process; the schema is created or migrated on first use."""
    engine = _ENGINES.get(url)
    if engine is not None:
        return engine
    with map_exceptions(store_errors(url, opening=True)):
        if url.startswith("sqlite:"):
            from pathlib import Path

            parsed = make_url(url)
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            given = parsed.query.get("timeout")
            timeout = float(given) if isinstance(given, str) else SQLITE_TIMEOUT  # sqlite3 sets its busy timeout from it
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": timeout})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        from keel.core.store.migrate import upgrade

        upgrade(engine)
    event.listen(engine, "handle_error", _store_error_hook(url))  # from now on, for every use of the engine
    _ENGINES[url] = engine
    return engine


def _store_error_hook(url: str) -> Any:
    """SQLAlchemy's handle_error hook: each DBAPI error on this engine becomes the keel error the store mapping
    makes of it (SQLAlchemy raises what the hook returns, after its own clean-up and pool invalidation)."""
    mapping = store_errors(url)

    def hook(ctx: ExceptionContext) -> KeelError | None:
        if ctx.is_pre_ping:  # a stale pooled connection: SQLAlchemy reconnects by itself
            return None
        return translated(ctx.sqlalchemy_exception or ctx.original_exception, mapping)

    return hook


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One session per unit of work: commit on success, roll back on any error; store errors as StoreError."""
    with map_exceptions(store_errors(str(engine.url))):
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def retry_delays(retries: int | None = None) -> list[float]:
    """The waits between tries: 0.5 s doubling to at most 8 s, each with +-50 % jitter (KEEL_STORE_RETRIES of them)."""
    if retries is None:
        from keel.core.config import Settings

        retries = Settings().store_retries
    return [min(0.5 * 2**i, 8.0) * random.uniform(0.5, 1.5) for i in range(retries)]


def unit_of_work(fn: Callable[P, T]) -> Callable[P, T]:
    """Run ``fn`` (which opens its own session or connection) again from the top, with backoff, after a transient
    StoreError; once the retries are spent, the last error, saying how long it was tried, is final."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        delays: list[float] | None = None
        tries, started = 0, time.monotonic()
        while True:
            tries += 1
            try:
                return fn(*args, **kwargs)
            except StoreError as exc:
                if not exc.transient:
                    raise
                if delays is None:
                    delays = retry_delays()
                if tries > len(delays):
                    spent = f"; gave up after {tries} tries in {time.monotonic() - started:.0f} s" if tries > 1 else ""
                    raise StoreError(f"{exc.message}{spent}", exc.title) from exc  # final for the units around
                wait = delays[tries - 1]
                log.warning("%s; trying again in %.1f s (%d of %d)", exc.message, wait, tries, len(delays))
                time.sleep(wait)

    return wrapper


def insert_ignore(session: Session, model: type[SQLModel], rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, skipping those whose unique key already exists (idempotent writes)."""
    if not rows:
        return
    table = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(table).on_conflict_do_nothing(), list(rows))
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        session.execute(postgresql_insert(table).on_conflict_do_nothing(), list(rows))
    else:  # pragma: no cover - other dialects are not supported
        raise StoreError(f"unsupported database dialect {dialect}")


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


__all__ = ["SQLModel", "dispose_engines", "get_engine", "insert_ignore", "session_scope", "unit_of_work"]


@contextmanager
def raw_transaction(engine: Engine) -> Iterator[Any]:
    """A DBAPI cursor in one transaction of its own: committed on success, rolled back on any error (a connection
    that is gone never goes back to the pool); the driver's errors as the store's (SQLAlchemy is not in between)."""
    with map_exceptions(store_errors(str(engine.url))):
        raw = engine.raw_connection()
        try:
            yield raw.cursor()
            raw.commit()
        except BaseException:
            try:
                raw.rollback()
            except Exception:  # the connection is gone: never hand it back to the pool
                raw.invalidate()
            raise
        finally:
            raw.close()


def insert_rows_ignore(cur: Any, dialect: str, table: str, columns: Sequence[str],
                       values: Iterable[tuple[Any, ...]]) -> None:
    """The driver's own batch insert of plain rows on ``cur``, skipping existing keys: sqlite3's executemany,
    psycopg2's pages of 5000; both take the rows as they come, so millions never exist at once."""
    cols = ", ".join(columns)
    if dialect == "sqlite":
        marks = ", ".join("?" for _ in columns)
        cur.executemany(f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})", values)
    else:
        from psycopg2.extras import execute_values

        execute_values(cur, f"INSERT INTO {table} ({cols}) VALUES %s ON CONFLICT DO NOTHING", values, page_size=5000)


@unit_of_work
def bulk_insert_ignore(engine: Engine, table: str, columns: Sequence[str],
                       rows: Sequence[tuple[Any, ...]] | Callable[[], Iterable[tuple[Any, ...]]]) -> None:
    """Insert many plain rows (already converted to driver types) in one transaction, skipping existing keys.

    The fast path for metric points: the driver's own batch insert, no ORM per row. `rows` may be a function
    making the rows afresh, so a retry of the unit (below) makes them again.
    """
    if isinstance(rows, Sequence) and not rows:
        return
    with raw_transaction(engine) as cur:
        insert_rows_ignore(cur, engine.dialect.name, table, columns, rows() if callable(rows) else rows)
