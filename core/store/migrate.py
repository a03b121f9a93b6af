"""Schema migrations (Alembic), applied on first use of a store; a no-op when already at head."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest migration shipped with this keel."""
    heads = sorted(p.stem.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("*.py"))
    return heads[-1]


MIGRATION_LOCK = 0x6B65656C  # "keel": the PostgreSQL advisory lock key that serialises migrations


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return _revision(conn)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process per store at a time; the others wait, then find the schema at head.

    PostgreSQL: a transaction-scoped advisory lock, taken in the migration's transaction (released when it
    commits, or by the server when a dying process's connection goes). SQLite: an exclusive lock on a file
    beside the database (released by the kernel when its holder exits, however it exits), held around the
    whole transaction: released before the commit, the next process would read the revision not yet committed
    and migrate again ("table ... already exists").
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine) -> None:
    """Bring the schema to head. Cheap when nothing is to do (one small query).

    Safe when several processes open a new store at once (workers starting together): the first migrates
    under the migration lock, the others read the revision again under it and find nothing to do.
    """
    head = head_revision()
    if current_revision(engine) == head:
        return
    from alembic import command

    cfg = _config()
    with _migration_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        if _revision(conn) == head:
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
