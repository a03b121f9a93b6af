"""Secrets and paths: passwords in store and Apprise URLs never show, and odd names never move keel's writes.

The secrets test configures a PostgreSQL store URL and Apprise URLs that carry passwords, runs keel commands and
pipeline runs (alerts fire and fail to deliver, one run fails), drives the error paths (an unreachable store, a
database that does not exist, URLs keel cannot parse, a bad [alerts] value) and the TUI, then searches every byte
keel printed, every file under the test's folder (keel's store of Prefect's run logs, its results, the server's
log) and every row of every table of the store for the passwords.

The paths test runs batches whose names and row ids carry `..`, slashes, quotes, SQL and odd characters, then
compares every file under the test's folder, and the listing of the folder above it, with before: everything
new is under KEEL_HOME or the artifact folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from postgres_db import fresh_database
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from keel.core.data.demo import DEMO_CONFIG

pytestmark = pytest.mark.slow  # end to end: real keel commands, a Prefect server, PostgreSQL

DB_SECRET = "s3cret-pw-db"
MAIL_SECRET = "s3cret-mail"
HOOK_SECRET = "s3cret-hook"
SECRETS = (DB_SECRET, MAIL_SECRET, HOOK_SECRET)
ALERT_URLS = (f"mailtos://keel:{MAIL_SECRET}@localhost:1/?from=keel@example.com&to=ops@example.com",
              f"json://keel:{HOOK_SECRET}@127.0.0.1:1/hook")


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a keel command: this test's KEEL_HOME (Prefect's state beneath it), nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "PREFECT_"))}
    return {**env, "KEEL_HOME": str(home), "DO_NOT_TRACK": "1", **extra}


def _keel(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _found(blob: str | bytes) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [s for s in SECRETS if s.encode() in data]


@pytest.fixture
def batches(demo_slices: list[Path]) -> list[Path]:
    return demo_slices


# --- secrets ------------------------------------------------------------------------------------------------


def test_store_and_apprise_passwords_never_appear_in_output_logs_tui_or_store(batches, tmp_path):
    with fresh_database("keel_secrets") as base:
        url = make_url(base).set(password=DB_SECRET)  # trust auth: the password is accepted and ignored
        db = url.render_as_string(hide_password=False)
        work, home = tmp_path / "work", tmp_path / "home"
        work.mkdir()
        urls = ", ".join(f'"{u}"' for u in ALERT_URLS)
        (work / "keel.toml").write_text(f"{DEMO_CONFIG}\n[alerts]\nurls = [{urls}]\n")
        env = _env(home, KEEL_DATABASE_URL=db)
        seen: list[tuple[str, subprocess.CompletedProcess[str]]] = []

        def keel(*args: str, expect: int | None = 0, **extra: str) -> subprocess.CompletedProcess[str]:
            out = _keel(*args, env={**env, **extra}, cwd=work)
            seen.append((" ".join(args), out))
            if expect is not None:
                assert out.returncode == expect, (args, out.stdout[-2000:], out.stderr[-2000:])
            return out

        keel("server", "start")
        try:
            keel("run", str(batches[0]), "--json")
            second = keel("run", str(batches[1]), "--json")
            assert '"status": "completed"' in second.stdout
            keel("run", str(batches[2]))
            not_a_folder = tmp_path / "a-file"
            not_a_folder.write_text("")
            failed = keel("run", str(batches[3]), expect=1, KEEL_ARTIFACTS_URL=str(not_a_folder / "artifacts"))
            assert failed.stderr.splitlines()[-1].startswith("keel: cannot write"), failed.stderr
            assert "| apprise -" not in failed.stderr  # a failed delivery is kept on the alert, not printed
            flight = pl.read_parquet(batches[1])["flight_id"][0]
            for args in (["runs"], ["runs", "--json"], ["models", "--json"], ["alerts", "--all"],
                         ["alerts", "--all", "--json"], ["reviews", "--all", "--json"], ["history", "flights-delay"],
                         ["lineage", "flights-delay", "1", "--json"], ["dead-letters", "--json"], ["dead-letters"],
                         ["audit", "verify"], ["trace", flight, "--json"], ["server", "status", "--json"],
                         ["metrics", "estimates", "flights-delay"]):
                keel(*args)
            alerts = keel("alerts", "--all", "--json").stdout
            assert '"rule": "failure"' in alerts, alerts[:2000]  # the failed run alerted, and delivery failed
            assert '"delivered": true' not in alerts and '"delivered": false' in alerts

            # the error paths: each one line, exit 1 or 2, and never the password
            down = f"postgresql+psycopg2://keel:{DB_SECRET}@127.0.0.1:1/nowhere"
            missing = url.set(database="keel_no_such_database").render_as_string(hide_password=False)
            for bad in (down, missing, f"postgresql+nodriver://keel:{DB_SECRET}@127.0.0.1/x",
                        f"postgresql://keel:{DB_SECRET}@127.0.0.1:notaport/x", f"keel:{DB_SECRET}@127.0.0.1/x"):
                for args in (["runs"], ["run", str(batches[0])], ["models", "--json"]):
                    out = keel(*args, expect=None, KEEL_DATABASE_URL=bad, KEEL_STORE_RETRIES="1")
                    assert out.returncode in (1, 2) and out.stderr.splitlines()[-1].startswith("keel: "), (bad, args)
            keel("--debug", "runs", expect=1, KEEL_DATABASE_URL=down, KEEL_STORE_RETRIES="1")
            (work / "bad.toml").write_text(f'{DEMO_CONFIG}\n[alerts]\nurls = "{ALERT_URLS[1]}"\n')
            out = keel("run", str(batches[0]), "--config", "bad.toml", expect=2)
            assert "urls" in out.stderr
            (work / "store.toml").write_text(f'{DEMO_CONFIG}\n[store]\ndatabase_url = "{missing}"\n')
            keel("run", str(batches[0]), "--config", "store.toml", expect=1)
            keel("reviews", "--config", "store.toml", expect=1)
        finally:
            keel("server", "stop", expect=None)

        screens = asyncio.run(_tui_screens(work, home, db, down))
        assert any("flights-2013-02" in s for s in screens) and any("cannot connect" in s for s in screens), screens

        leaks = [f"keel {args}: {_found(out.stdout + out.stderr)}" for args, out in seen
                 if _found(out.stdout + out.stderr)]
        leaks += [f"TUI screen {i}: {_found(s)}" for i, s in enumerate(screens) if _found(s)]
        files = [f for f in _files(tmp_path) if f.parent != work]  # but the keel.toml files this test wrote
        assert any(f.name == "prefect.db" for f in files) and any(f.name == "server.log" for f in files)
        leaks += [f"file {f.relative_to(tmp_path)}: {_found(f.read_bytes())}" for f in files if _found(f.read_bytes())]
        engine = create_engine(base)
        try:
            tables = inspect(engine).get_table_names()
            assert {"pipeline_run", "stage_run", "alert", "audit_event", "dataset_version"} <= set(tables)
            with engine.connect() as conn:
                for table in tables:
                    rows = conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars().all()
                    leaks += [f"table {table}: {_found(r)}" for r in rows if _found(r)]
        finally:
            engine.dispose()
        assert not leaks, "\n".join(leaks)


async def _tui_screens(work: Path, home: Path, db: str, down: str) -> list[str]:
    """The TUI's screens on the store (every view, a run, the alerts), and on an unreachable store, as text."""
    from keel.core.store.engine import dispose_engines
    from keel.tui.app import KeelApp
    from keel.tui.screens.run_detail import RunDetailScreen
    from tests.tui.helpers import screen_text, settled, until

    screens: list[str] = []
    saved = {k: os.environ.get(k) for k in ("KEEL_HOME", "KEEL_DATABASE_URL")}
    cwd = Path.cwd()
    os.environ["KEEL_HOME"] = str(home)
    os.chdir(work)
    try:
        for url in (db, down):
            os.environ["KEEL_DATABASE_URL"] = url
            dispose_engines()
            app = KeelApp("keel.toml", refresh=0)
            async with app.run_test(size=(160, 48)) as pilot:
                await pilot.pause(0.5)
                await settled(pilot)
                screens.append(screen_text(app))
                if url == down:
                    continue
                await pilot.press("enter")
                await until(pilot, lambda a=app: isinstance(a.screen, RunDetailScreen))
                await settled(pilot)
                screens.append(screen_text(app))
                await pilot.press("escape")
                for key in "12345":
                    await pilot.press(key)
                    await pilot.pause(0.3)
                    await settled(pilot)
                    screens.append(screen_text(app))
    finally:
        dispose_engines()
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return screens


# --- paths --------------------------------------------------------------------------------------------------

ODD_NAMES = ("../../evil.parquet", "..evil...parquet", "./-rf --force.parquet",
             "quote'\"; DROP TABLE prediction; --.parquet", "$(touch pwned) `id` %2e%2e%2f.parquet",
             "C:\\evil\\..\\win.parquet", "é ☃ 名前 tab\there.parquet", "...parquet")
ODD_IDS = ("../../../../etc/passwd", "..\\..\\evil", "'; DROP TABLE prediction; --", '"quoted" id', "/abs/olute",
           "%s %d {0} {}", "a\\x00b", "~/home", "$(touch pwned)", "NULL")


def _listing(root: Path) -> set[str]:
    return {str(Path(d, n).relative_to(root)) for d, dirs, names in os.walk(root) for n in [*dirs, *names]}


def test_odd_batch_names_and_row_ids_never_make_keel_write_outside_its_home_and_artifact_folder(batches, tmp_path):
    work, home, artifacts = tmp_path / "in" / "sub" / "work", tmp_path / "home", tmp_path / "artifacts"
    work.mkdir(parents=True)
    (work / "keel.toml").write_text(DEMO_CONFIG.replace("every = 3", "every = 0\non_drift = false\non_drop = false"))
    env = _env(home, KEEL_ARTIFACTS_URL=str(artifacts), HOME=str(tmp_path / "user-home"))
    (tmp_path / "user-home").mkdir()
    files: dict[str, Path] = {}
    for i, name in enumerate(ODD_NAMES):  # each a file under its odd name, relative to the working folder
        frame = pl.read_parquet(batches[1 + i % 3])
        ids = [f"{ODD_IDS[j % len(ODD_IDS)]}#{i}-{j}" if j < 40 else v for j, v in enumerate(frame["flight_id"])]
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.with_columns(flight_id=pl.Series(ids)).write_parquet(path)
        files[name] = path
    absolute = tmp_path / "in" / "abs olute.parquet"
    shutil.copy(batches[3], absolute)
    before, above = _listing(tmp_path), _listing(tmp_path.parent)

    out = _keel("server", "start", env=env, cwd=work)
    assert out.returncode == 0, out.stderr
    try:
        first = _keel("run", str(batches[0]), env=env, cwd=work)
        assert first.returncode == 0, first.stderr
        for name in (*ODD_NAMES, str(absolute)):
            out = _keel("run", "--", name, env=env, cwd=work)
            assert out.returncode == 0, (name, out.stderr)
        for name in ODD_NAMES[:4]:  # batch scoring takes the same names (its predictions are the run's: ignored)
            out = _keel("score", "--", name, env=env, cwd=work)
            assert out.returncode == 0, (name, out.stderr)
        trace = _keel("trace", f"{ODD_IDS[2]}#3-2", "--json", env=env, cwd=work)
        assert trace.returncode == 0 and "DROP TABLE" in trace.stdout, trace.stderr
        runs = _keel("runs", "--json", env=env, cwd=work)
        assert runs.stdout.count('"status": "completed"') == 1 + len(ODD_NAMES) + 1, runs.stdout[-3000:]
    finally:
        _keel("server", "stop", env=env, cwd=work)

    new = _listing(tmp_path) - before
    outside = sorted(p for p in new if not p.startswith(("home", "artifacts")))
    assert not outside, outside
    assert {p for p in new if p.startswith("artifacts/")}, "the artifacts went to the artifact folder"
    assert _listing(tmp_path.parent) - above <= {f"{tmp_path.name}/{p}" for p in new}
    db = create_engine(f"sqlite:///{home / 'keel.db'}")
    try:
        with db.connect() as conn:
            stored = set(conn.execute(text("SELECT row_id FROM prediction")).scalars())
            sources = set(conn.execute(text("SELECT source FROM dataset_version WHERE kind = 'batch'")).scalars())
    finally:
        db.dispose()
    assert f"{ODD_IDS[2]}#3-2" in stored and f"{ODD_IDS[0]}#0-0" in stored
    assert str(files["../../evil.parquet"].resolve()) in sources
