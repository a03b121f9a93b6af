"""Throwaway PostgreSQL databases on the test server (KEEL_TEST_POSTGRES_URL); skips without one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def fresh_database(prefix: str = "keel_test", driver: str | None = None) -> Iterator[str]:
    """A new, uniquely named database; its URL (with `driver`, e.g. postgresql+asyncpg, if given). Dropped
    afterwards with every connection to it."""
    base = os.environ.get("KEEL_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("KEEL_TEST_POSTGRES_URL is not set")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(base).set(database=name)
    if driver:
        url = url.set(drivername=driver)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        from keel.core.store.engine import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
