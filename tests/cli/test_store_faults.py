"""The store or the artifact folder failing under a keel command: one line naming it, exit 1, no traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import registry_world as world
from click.testing import CliRunner
from sqlmodel import Session, select

from keel.cli.main import cli
from keel.core.registry import transactions as registry
from keel.core.store.engine import dispose_engines, get_engine
from keel.core.store.models import AuditEvent

NO_RETRIES = {"KEEL_STORE_RETRIES": "0"}  # the failure at once (tests/reliability/test_store_retry.py: the retries)


def _keel(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keel", *args], env={**os.environ, **NO_RETRIES, **env},
                          capture_output=True, text=True, timeout=300)


def _store_at_head(db: Path) -> str:
    url = f"sqlite:///{db}"
    get_engine(url)  # created and migrated, in WAL mode, as keel leaves it
    dispose_engines()
    return url


def test_a_store_another_connection_holds_exclusively_fails_in_one_line_naming_it(keel_home):
    url = _store_at_head(keel_home / "keel.db")
    holder = sqlite3.connect(keel_home / "keel.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # in WAL mode, how one connection keeps readers out too
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = _keel("runs", env={"KEEL_DATABASE_URL": f"{url}?timeout=0.2"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.returncode == 1, out.stderr
    assert out.stderr == f"keel: the store at {url}?timeout=0.2 is locked by another writer (database is locked)\n"
    assert out.stdout == ""


def test_a_registry_change_while_another_writer_holds_the_store_fails_naming_it(keel_home, monkeypatch):
    config = world.build(keel_home.parent, versions=1)
    dispose_engines()
    url = f"sqlite:///{keel_home / 'keel.db'}?timeout=0.2"
    monkeypatch.setenv("KEEL_DATABASE_URL", url)
    monkeypatch.setenv("KEEL_STORE_RETRIES", "0")
    holder = sqlite3.connect(keel_home / "keel.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer mid-transaction; readers still read
    try:
        result = CliRunner().invoke(cli, ["promote", "churn", "1", "--reason", "first", "--config", str(config)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1
    assert result.output == f"keel: the store at {url} is locked by another writer (database is locked)\n"
    with Session(get_engine(url)) as s:
        assert not s.exec(select(AuditEvent)).all(), "nothing was written"


def test_an_unreachable_postgresql_store_fails_in_one_line_without_its_password(keel_home):
    port = world.closed_port()
    out = _keel("runs", env={"KEEL_DATABASE_URL": f"postgresql+psycopg2://keel:s3cret@127.0.0.1:{port}/keel"})
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert line.startswith(f"keel: cannot connect to the store at postgresql+psycopg2://keel:***@127.0.0.1:{port}/keel (")
    assert "Connection refused" in line and "s3cret" not in out.stderr + out.stdout


def test_an_artifact_folder_that_cannot_be_written_fails_in_one_line_naming_it(keel_home, monkeypatch):
    root = keel_home.parent
    config = world.build(root, versions=1)
    registry.promote(world.workspace(config), "churn", 1, "first", actor="setup")
    batch = world.make_batch(root, n=200, seed=7, name="new.parquet")
    (root / "blocker").write_text("a regular file where the artifact folder's parent should be")
    artifacts = root / "blocker" / "artifacts"  # no chmod stops root; a file in the path stops everyone
    monkeypatch.setenv("KEEL_ARTIFACTS_URL", str(artifacts))
    result = CliRunner().invoke(cli, ["score", str(batch), "--config", str(config)])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"keel: cannot write {artifacts}/")
    assert line.endswith(f" in the artifact store at {artifacts} (Not a directory)")


def test_keel_run_against_a_prefect_api_that_does_not_answer_fails_in_one_line_and_writes_nothing(keel_home):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = world.write_config(keel_home.parent)
    batch = world.make_batch(keel_home.parent)
    out = _keel("run", str(batch), "--config", str(config),
                env={"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "KEEL_HOME": str(keel_home)})
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == (f"keel: the Prefect API at http://127.0.0.1:{port}/api cannot be reached "
                                  "([Errno 111] Connection refused)")
    assert not (keel_home / "keel.db").exists(), "nothing was written before Prefect answered"
