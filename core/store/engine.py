"""Engine and session handling: SQLite (WAL) by default, PostgreSQL through KEEL_DATABASE_URL.

This is the store's error boundary: an operational error of SQLAlchemy or the driver on an engine
made here (in any session, bare read, migration or bulk insert: the store locked, a connection
dropped or refused, a full disk) reaches keel as one StoreError line naming the store, through
keel.core.errors' store mapping. Integrity errors stay SQLAlchemy's: callers whose unique keys carry
idempotency or a race handle them. ``sqlite:///path?timeout=5`` sets how many seconds a writer waits
for another's lock (default 30).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, ExceptionContext, make_url
from sqlmodel import Session, SQLModel, create_engine

from keel.core.errors import KeelError, StoreError, map_exceptions, store_errors, translated

_ENGINES: dict[str, Engine] = {}
SQLITE_TIMEOUT = 30.0  # seconds a connection waits for another writer's lock


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: bulk inserts keep their index pages in memory
    cur.close()


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


__all__ = ["SQLModel", "dispose_engines", "get_engine", "insert_ignore", "session_scope"]


def bulk_insert_ignore(engine: Engine, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert many plain rows (already converted to driver types) in one transaction, skipping existing keys.

    The fast path for predictions and metric points: the driver's own batch insert, no ORM per row. `rows` may be
    an iterator: both drivers take the rows as they go (sqlite3's executemany, psycopg2's pages of 5000).
    """
    if isinstance(rows, Sequence) and not rows:
        return
    cols = ", ".join(columns)
    with map_exceptions(store_errors(str(engine.url))):  # the driver's own errors: SQLAlchemy is not in between
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            if engine.dialect.name == "sqlite":
                marks = ", ".join("?" for _ in columns)
                cur.executemany(f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})", rows)  # type: ignore[arg-type]  # sqlite3 takes any iterable
            else:
                from psycopg2.extras import execute_values

                execute_values(cur, f"INSERT INTO {table} ({cols}) VALUES %s ON CONFLICT DO NOTHING", rows,
                               page_size=5000)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
