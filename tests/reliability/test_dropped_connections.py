"""A store connection dropped mid-run, a SQLite store locked by another writer and a Prefect API that goes away
for a while: each `keel run` goes on and ends with the store a never-troubled run leaves.

The store's units of work (keel.core.store.engine.unit_of_work) run again with backoff after a dropped
connection or a locked store; Prefect's client retries its calls while its server restarts. Each test first
proves its fault hit (backends terminated and a unit tried again, a write refused while locked, the server
down while the run was still going).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.reliability.test_kill_restart import CONFIG

pytestmark = pytest.mark.slow  # keel run in subprocesses, on PostgreSQL or against a Prefect server


def _project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "keel.toml").write_text(CONFIG)
    return folder / ".keel"


def _start(batch: Path, home: Path, api: str, **env: str) -> subprocess.Popen:
    full = {**os.environ, "KEEL_HOME": str(home), "PREFECT_API_URL": api, **env}
    return subprocess.Popen([sys.executable, "-m", "keel", "run", str(batch)], cwd=home.parent, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(batch: Path, home: Path, api: str, **env: str) -> subprocess.CompletedProcess:
    proc = _start(batch, home, api, **env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _snapshot(url: str) -> dict:
    """Everything a run leaves that a fault must not change (ids and times aside), on SQLite or PostgreSQL."""
    engine = create_engine(url)

    def cell(value: object) -> object:  # numbers as both stores give them back (PostgreSQL's numeric: Decimal)
        return round(float(value), 6) if isinstance(value, float | Decimal) else value

    with engine.connect() as db:
        q = lambda sql: sorted(tuple(cell(v) for v in r) for r in db.execute(text(sql)).fetchall())  # noqa: E731
        state = {
            "datasets": q("select id, kind, rows from dataset_version"),
            "lineage": q("select parent_id, child_id from dataset_lineage"),
            "models": q("select model_name, version, artifact_sha256, status, train_dataset_id from model_version"),
            "alias": q("select model_name, alias, model_version_id from alias"),
            "predictions": q("select count(*), sum(score) from prediction"),
            "quarantine": q("select dataset_id, row_index, reason from quarantine"),
            "audit": [tuple(r) for r in db.execute(text(
                "select action, model_name, version from audit_event order by id"))],
            "reviews": q("select candidate_version_id, status from review"),
            "drift": q("select dataset_id, reference_id, n_drifted from drift_report"),
            "metrics": q("select model_version_id, dataset_id, scope, name, value from metric_point"),
            "runs": q("select status from pipeline_run where status <> 'abandoned'"),
            "stages": q("select name, status from stage_run"),
        }
    engine.dispose()
    from keel.core.registry.audit import verify
    from keel.core.store.engine import dispose_engines, get_engine

    state["audit_chain"] = verify(get_engine(url)).ok
    dispose_engines()
    return state


def _stage_seen(url: str, stage: str) -> bool:
    try:
        engine = create_engine(url, connect_args={"timeout": 1} if url.startswith("sqlite") else {})
        try:
            with engine.connect() as db:
                return db.execute(text("select count(*) from stage_run s join pipeline_run p on p.id = s.run_id "
                                       "where s.name = :n and p.status = 'running'"), {"n": stage}).scalar_one() > 0
        finally:
            engine.dispose()
    except Exception:  # the store not made yet, or locked: not yet
        return False


def _wait_for_stage(proc: subprocess.Popen, url: str, stage: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not _stage_seen(url, stage) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before {stage}: the fault would not hit a run"


def _sqlite_url(home: Path, query: str = "") -> str:
    return f"sqlite:///{home / 'keel.db'}{query}"


@pytest.fixture(scope="module")
def api_url(prefect_server) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def untroubled(demo_slices, tmp_path_factory, api_url) -> dict:
    """The store two runs leave when nothing goes wrong (SQLite; the snapshot holds nothing store-specific)."""
    home = _project(tmp_path_factory.mktemp("untroubled") / "project")
    for batch in demo_slices[:2]:
        _run(batch, home, api_url)
    return _snapshot(_sqlite_url(home))


# --- PostgreSQL: the store's backends terminated mid-run -------------------------------------------------


def test_a_run_whose_postgresql_connections_are_terminated_mid_run_retries_and_completes(
        demo_slices, tmp_path, api_url, untroubled):
    """From ingest on, pg_terminate_backend on every keel connection every 100 ms until a unit of work in the
    middle of its statements has lost its connection (keel says it tries again): that unit runs again on a new
    connection, idle pooled ones are replaced on checkout (pool_pre_ping), and the run completes as if
    nothing happened."""
    from postgres_db import fresh_database

    with fresh_database("keel_dropped") as url:
        home = _project(tmp_path / "project")
        _run(demo_slices[0], home, api_url, KEEL_DATABASE_URL=url)
        name = url.rsplit("/", 1)[1]
        admin = create_engine(os.environ["KEEL_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
        proc = _start(demo_slices[1], home, api_url, KEEL_DATABASE_URL=url)
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(proc.stderr))  # type: ignore[arg-type]
        reader.start()
        _wait_for_stage(proc, url, "ingest")
        terminated, deadline = 0, time.monotonic() + 30
        with admin.connect() as db:
            while proc.poll() is None and time.monotonic() < deadline and not any("trying again" in e for e in err):
                terminated += sum(r[0] for r in db.execute(text(
                    "select pg_terminate_backend(pid) from pg_stat_activity where datname = :db "
                    "and pid <> pg_backend_pid()"), {"db": name}))
                time.sleep(0.1)
        admin.dispose()
        proc.wait(timeout=600)
        reader.join()
        stderr = "".join(err)
        assert proc.returncode == 0, stderr
        print(f"{terminated} keel backends terminated; units tried again: {stderr.count('trying again')}")
        assert terminated > 0, "no keel connection was terminated"
        assert "was dropped" in stderr and "trying again" in stderr, "no unit of work lost its connection"
        assert "Traceback" not in stderr
        assert _snapshot(url) == untroubled


# --- SQLite: another process holds the write lock mid-run --------------------------------------------------


def _hold_write_lock(db_path: Path, seconds: float, times: int, stop: threading.Event, holds: list[float]) -> None:
    """Take SQLite's write lock (BEGIN IMMEDIATE) for `seconds`, `times` times with a second between, or until `stop`."""
    db = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    try:
        for _ in range(times):
            if stop.is_set():
                break
            db.execute("BEGIN IMMEDIATE")
            held = time.monotonic()
            stop.wait(seconds)
            db.execute("COMMIT")
            holds.append(time.monotonic() - held)
            stop.wait(1.0)  # the run gets in between
    finally:
        db.close()


def _second_batch_under_lock(demo_slices, tmp_path: Path, api_url: str, seconds: float, times: int,
                             **env: str) -> tuple[Path, str, subprocess.Popen, str, list[float]]:
    """The first batch run on a SQLite store with a 1 s busy timeout, then the second with another process taking
    the store's write lock `times` times for `seconds` each from its ingest on: the home, the store URL, the
    finished process, its stderr and how long each hold lasted."""
    home = _project(tmp_path / "project")
    url = _sqlite_url(home, "?timeout=1")
    _run(demo_slices[0], home, api_url, KEEL_DATABASE_URL=url)
    proc = _start(demo_slices[1], home, api_url, KEEL_DATABASE_URL=url, **env)
    _wait_for_stage(proc, url, "ingest")
    stop, holds = threading.Event(), []
    holder = threading.Thread(target=_hold_write_lock, args=(home / "keel.db", seconds, times, stop, holds))
    holder.start()
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        stop.set()
        holder.join()
    return home, url, proc, err, holds


def test_a_run_on_a_sqlite_store_locked_by_another_writer_waits_and_completes(
        demo_slices, tmp_path, api_url, untroubled):
    """From ingest on, another process takes SQLite's write lock three times for 3 s (three times the store's 1 s
    busy timeout): each write refused as locked is tried again with backoff, and the run completes."""
    home, url, proc, err, holds = _second_batch_under_lock(demo_slices, tmp_path, api_url, seconds=3.0, times=3)
    assert proc.returncode == 0, err
    print(f"write lock held {len(holds)} times for {sum(holds):.1f} s; units tried again: {err.count('trying again')}")
    assert holds, "the lock was never held"
    assert "is locked by another writer" in err and "trying again" in err, "no write met the lock"
    assert "Traceback" not in err
    assert _snapshot(_sqlite_url(home)) == untroubled


def test_a_run_whose_store_stays_locked_beyond_its_retries_fails_in_one_line_and_its_rerun_completes(
        demo_slices, tmp_path, api_url, untroubled):
    """The lock held from ingest until the run gives up (one retry allowed): the run fails with one line naming
    the locked store, and once the lock is gone the rerun of the batch completes to a never-troubled run's
    store, apart from the failed run's own row (a dead letter)."""
    home, url, proc, err, _ = _second_batch_under_lock(demo_slices, tmp_path, api_url, seconds=120.0, times=1,
                                                       KEEL_STORE_RETRIES="1")
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("keel: the store at ") and "is locked by another writer" in last, err
    assert "gave up after 2 tries" in last and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("keel:")] == [last], "one error line"

    _run(demo_slices[1], home, api_url, KEEL_DATABASE_URL=url)
    after = _snapshot(_sqlite_url(home))
    runs, stages = after.pop("runs"), after.pop("stages")
    assert [s for s in runs if s != "failed"] == untroubled["runs"]
    assert set(stages) - {(name, "failed") for name, _ in stages} == set(untroubled["stages"])
    assert after == {k: v for k, v in untroubled.items() if k not in ("runs", "stages")}


# --- Prefect: the API goes away and comes back -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrefectServer:
    """A `prefect server start` on loopback with its own home (database), which the test kills and restarts
    on the same port and database."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        from keel.flows.local_server import wait_until_healthy

        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
                   PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED="false",
                   PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED="false")
        began = time.monotonic()
        with open(self.home / "server.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                          "--port", str(self.port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        assert wait_until_healthy(self.url, self.proc, 180), (self.home / "server.log").read_text()[-2000:]
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)


def _flow_run_state(api: str, flow_run_id: str) -> str:
    import httpx

    return httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()["state"]["type"]


def test_a_run_whose_prefect_api_goes_away_and_comes_back_completes(demo_slices, tmp_path, api_url, untroubled):
    """The Prefect server is killed (SIGKILL) when the run has trained, its candidate evaluated and gated, and
    started again on the same port and database 5 s later: the run completes and Prefect records it Completed,
    because Prefect's client retries its calls (PREFECT_CLIENT_MAX_RETRIES, default 5: about a minute of
    backoff) once it has reached the server. The run's task-run events sent while the server was down are lost
    (keel records its stages itself). keel's outcome: the run completes, no failure line."""
    server_home = tmp_path / "prefect-server"
    server_home.mkdir()
    server = PrefectServer(server_home)
    starting = threading.Thread(target=server.start)
    starting.start()  # while the first batch runs on the session's server
    try:
        home = _project(tmp_path / "project")
        _run(demo_slices[0], home, api_url)
        starting.join()
        assert server.proc is not None and server.proc.poll() is None, (server_home / "server.log").read_text()[-2000:]
        proc = _start(demo_slices[1], home, server.url)
        _wait_for_stage(proc, _sqlite_url(home), "gate")
        server.kill()
        down_at = time.monotonic()
        time.sleep(5)
        assert proc.poll() is None, ("the run ended before the server came back: "
                                     f"{proc.communicate()[1].strip()[-2000:]}")
        server.start()
        down = time.monotonic() - down_at
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        print(f"Prefect API away {down:.0f} s while the run went on")
        assert "Traceback" not in err and "ERROR" not in err, err[-3000:]
        db = sqlite3.connect(home / "keel.db")
        (flow_run_id,) = db.execute("select flow_run_id from pipeline_run where source like '%02.parquet'").fetchone()
        db.close()
        assert _flow_run_state(server.url, flow_run_id) == "COMPLETED"
        assert down >= 5
    finally:
        server.stop()
    assert _snapshot(_sqlite_url(home)) == untroubled
