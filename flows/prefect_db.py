"""An empty, migrated Prefect database from which fresh PREFECT_HOMEs start.

Prefect's temporary server migrates a new SQLite database from nothing on its first start in a
PREFECT_HOME: 10 to 15 s of Alembic, a quarter of the demo's first run. keel builds that database
once per Prefect version, in the environment it is installed in (`make install` runs
`keel.flows.prefect_db.build()`), and :func:`seed` copies it into every new PREFECT_HOME before
Prefect starts; the server then finds the schema at head and starts in a few seconds. Nothing
changes where the user points Prefect elsewhere (PREFECT_API_URL, or a database URL of their own),
where the home has a database already, or where no template was built (Prefect migrates as before).

The template also holds Prefect's block types, registered at build: the server's first start in a home
registers them otherwise (1.3 to 1.5 s of a fresh home's 5.4 s start here), and Prefect then remembers in
the home's memo_store.toml that they are. A home seeded from a template whose blocks match the installed
Prefect collections is marked (BLOCKS_MARKER); keel starts its first server there with registration off
(:func:`server_env`), Prefect writes its memo as it would after registering, and later starts skip it as usual.
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
UPGRADE = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def main():  # as the server's start does: migrate, then register the block types
    db = provide_database_interface()
    await db.create_db()
    async with await db.session() as session:
        await run_block_auto_registration(session=session)

asyncio.run(main())
"""
BLOCKS_MARKER = "keel-blocks-from-template"
"""In a PREFECT_HOME: its database came from the template with the block types registered; Prefect's memo of
that is not yet written."""
REGISTER_SETTINGS = ("PREFECT_SERVER_REGISTER_BLOCKS_ON_START", "PREFECT_API_BLOCKS_REGISTER_ON_START")


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
    if _blocks_path(template).is_file() and _blocks_path(template).read_text() == _collections():
        (prefect_home / BLOCKS_MARKER).touch()
    return True


def server_env(prefect_home: Path) -> dict[str, str]:
    """What a server started in ``prefect_home`` needs beyond the environment: block registration off when the
    home's database came from the template with its block types (unless the user set it)."""
    if (prefect_home / BLOCKS_MARKER).exists() and not any(name in os.environ for name in REGISTER_SETTINGS):
        return {REGISTER_SETTINGS[0]: "false"}
    return {}


def server_started(prefect_home: Path) -> None:
    """A server answered in ``prefect_home``: Prefect has written its memo of the block types, the mark goes."""
    if (prefect_home / "memo_store.toml").exists():
        (prefect_home / BLOCKS_MARKER).unlink(missing_ok=True)


def _blocks_path(template: Path) -> Path:
    return template.with_name(template.name + ".blocks")


def _collections() -> str:
    """The installed Prefect collections (their block types register too): the template's blocks hold for a
    home only while these are the ones it was built with."""
    from importlib.metadata import entry_points

    return "\n".join(sorted(f"{ep.name}={ep.value}" for ep in entry_points(group="prefect.collections")))


def build(path: Path | None = None) -> Path:
    """Migrate an empty Prefect database in a scratch PREFECT_HOME, register the block types, and keep it at
    ``path`` (with the installed collections beside it, in ``path``.blocks)."""
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
            if not db.execute("SELECT count(*) FROM block_type").fetchone()[0]:
                raise RuntimeError(f"Prefect's block registration left no block types in {built}")
            db.execute("PRAGMA journal_mode=DELETE")
        finally:
            db.close()
        built.replace(path)
    _blocks_path(path).write_text(_collections())
    return path
