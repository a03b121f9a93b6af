"""An empty, migrated Prefect database from which fresh PREFECT_HOMEs start.

Prefect's temporary server migrates a new SQLite database from nothing on its first start in a
PREFECT_HOME: 10 to 15 s of Alembic, a quarter of the demo's first run. keel builds that database
once per Prefect version, in the environment it is installed in (`make install` runs
`keel.flows.prefect_db.build()`), and :func:`seed` copies it into every new PREFECT_HOME before
Prefect starts; the server then finds the schema at head and starts in a few seconds. Nothing
changes where the user points Prefect elsewhere (PREFECT_API_URL, or a database URL of their own),
where the home has a database already, or where no template was built (Prefect migrates as before).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

OWN_DATABASE = ("PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
UPGRADE = ("import asyncio\nfrom prefect.server.database import provide_database_interface\n"
           "asyncio.run(provide_database_interface().create_db())\n")


def template_path() -> Path:
    """KEEL_PREFECT_TEMPLATE, else share/keel/prefect-<version>.db in the environment keel runs in."""
    named = os.environ.get("KEEL_PREFECT_TEMPLATE")
    return Path(named) if named else Path(sys.prefix) / "share" / "keel" / f"prefect-{version('prefect')}.db"


def seed(prefect_home: Path) -> bool:
    """Copy the template into ``prefect_home`` when it has no database yet; True when it did."""
    target = prefect_home / "prefect.db"
    template = template_path()
    if any(os.environ.get(name) for name in OWN_DATABASE) or target.exists() or not template.is_file():
        return False
    data = template.read_bytes()
    if not data.startswith(b"SQLite format 3\x00"):  # a wrong KEEL_PREFECT_TEMPLATE: let Prefect migrate
        return False
    partial = prefect_home / f".prefect.db.{os.getpid()}.partial"
    try:
        partial.write_bytes(data)
        os.link(partial, target)  # never over a database another process has just created
    except OSError:
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def build(path: Path | None = None) -> Path:
    """Migrate an empty Prefect database in a scratch PREFECT_HOME and keep it at ``path``."""
    path = path or template_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as scratch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=scratch, DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING")
        subprocess.run([sys.executable, "-c", UPGRADE], env=env, check=True, capture_output=True)
        built = Path(scratch) / "prefect.db"
        db = sqlite3.connect(built, isolation_level=None)
        try:  # one self-contained file: fold the write-ahead log in
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if not db.execute("SELECT version_num FROM alembic_version").fetchone():
                raise RuntimeError(f"Prefect's migrations left no alembic_version in {built}")
            db.execute("PRAGMA journal_mode=DELETE")
        finally:
            db.close()
        built.replace(path)
    return path
