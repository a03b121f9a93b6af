"""A run killed at any stage and started again ends in the same state as a run never killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = """\
model = "flights-delay"
target = "delayed"
positive = 1
id = "flight_id"
timestamp = "time_hour"
exclude = ["year", "month", "day", "dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum", "flight"]
[retrain]
every = 1
cooldown = 0
"""


@pytest.fixture(scope="module")
def api_url(prefect_server) -> str:
    """The session's Prefect server, shared with the subprocesses so none starts its own."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _start(batch: Path, home: Path, api_url: str) -> subprocess.Popen:
    env = {**os.environ, "KEEL_HOME": str(home), "PREFECT_API_URL": api_url}
    return subprocess.Popen([sys.executable, "-m", "keel", "run", str(batch)], cwd=home.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(batch: Path, home: Path, api_url: str) -> None:
    proc = _start(batch, home, api_url)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


def _snapshot(home: Path) -> dict:
    db = sqlite3.connect(home / "keel.db")
    q = lambda sql: sorted(db.execute(sql).fetchall())  # noqa: E731
    state = {
        "datasets": q("select id, kind, rows from dataset_version"),
        "lineage": q("select parent_id, child_id from dataset_lineage"),
        "models": q("select model_name, version, artifact_sha256, status, train_dataset_id from model_version"),
        "alias": q("select model_name, alias, model_version_id from alias"),
        "predictions": q("select count(*), round(sum(score), 6) from prediction"),
        "quarantine": q("select dataset_id, row_index, reason from quarantine"),
        "audit": [r for r in db.execute("select action, model_name, version from audit_event order by id")],
        "reviews": q("select candidate_version_id, status from review"),
        "drift": q("select dataset_id, reference_id, n_drifted from drift_report"),
        "metrics": q("select model_version_id, dataset_id, scope, name, round(value, 9) from metric_point"),
        "runs": q("select status from pipeline_run where status not in ('abandoned')"),
    }
    db.close()
    return state


def _stage_seen(home: Path, stage: str) -> bool:
    try:
        db = sqlite3.connect(home / "keel.db", timeout=1)
        try:
            return db.execute("select count(*) from stage_run s join pipeline_run p on p.id = s.run_id "
                              "where s.name = ? and p.status = 'running'", (stage,)).fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:
        return False


def _project(folder: Path) -> Path:
    folder.mkdir()
    (folder / "keel.toml").write_text(CONFIG)
    return folder / ".keel"


@pytest.fixture(scope="module")
def never_killed(demo_slices, tmp_path_factory, api_url) -> dict:
    home = _project(tmp_path_factory.mktemp("clean") / "project")
    for batch in demo_slices[:2]:
        _run(batch, home, api_url)
    return _snapshot(home)


@pytest.mark.slow  # keel run in subprocesses against a Prefect server, killed and run again
# killed from outside, in the middle of a stage's work (test_crash_points kills at every boundary and between
# writes, from inside): the scoring and the training, the two stages with the most work to interrupt
@pytest.mark.parametrize("stage", ["score", "train"])
def test_run_killed_at_a_stage_restarts_to_the_same_state(stage, demo_slices, tmp_path, api_url, never_killed):
    killed = _project(tmp_path / "killed")
    _run(demo_slices[0], killed, api_url)
    proc = _start(demo_slices[1], killed, api_url)
    deadline = time.monotonic() + 300
    while not _stage_seen(killed, stage) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run finished before reaching {stage}: kill point not exercised"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _run(demo_slices[1], killed, api_url)

    assert _snapshot(killed) == never_killed
