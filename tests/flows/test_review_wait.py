"""`[review] wait = true` across processes (issue 4): a paused pipeline run resumed by `keel approve`, and a timeout.

One real `prefect server start` on a free loopback port; the flow runs in one process, the approval in another.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import registry_world as world
from sqlmodel import Session, select

from keel.core.registry import audit
from keel.core.store.models import ModelVersion, PipelineRun, Review

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path_factory.mktemp("prefect-server")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    from keel.flows.local_server import wait_until_healthy

    if not wait_until_healthy(url, server, 120):
        server.kill()
        pytest.fail("prefect server did not start")
    yield url
    server.terminate()
    server.wait(timeout=30)


def _env(api: str, keel_home: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": api, "KEEL_HOME": str(keel_home), "PYTHONPATH": str(ROOT),
           "PREFECT_HOME": str(keel_home / "prefect-client")}
    env.pop("KEEL_DATABASE_URL", None)
    return env


def _start_run(api: str, keel_home: Path, timeout: int) -> tuple[Path, subprocess.Popen]:
    root = keel_home.parent
    extra = f"wait = true\ntimeout = {timeout}\n[gate]\nauto_promote = false\n[retrain]\nnum_boost_round = 20\n"
    config = world.write_config(root, extra=extra)
    batch = world.make_batch(root)
    proc = subprocess.Popen([sys.executable, "-m", "keel", "run", str(batch), "--config", str(config), "--json"],
                            env=_env(api, keel_home), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return config, proc


def _waiting(config: Path, proc: subprocess.Popen, limit: float = 150) -> None:
    ws = world.workspace(config)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        with Session(ws.engine) as s:
            if s.exec(select(PipelineRun).where(PipelineRun.status == "waiting")).first():
                return
        time.sleep(0.5)
    proc.kill()
    pytest.fail("the flagged run never started waiting")


def test_waiting_run_is_resumed_by_keel_approve_from_another_process(prefect_api, keel_home):
    config, proc = _start_run(prefect_api, keel_home, timeout=240)
    _waiting(config, proc)
    approve = subprocess.run([sys.executable, "-m", "keel", "approve", "churn", "1", "--reason", "looks right",
                              "--config", str(config)], env=_env(prefect_api, keel_home), cwd=keel_home.parent,
                             capture_output=True, text=True, timeout=120)
    assert approve.returncode == 0, approve.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["decision"] == "promoted" and summary["production_version"] == 1
    assert any("review approved" in r and "looks right" in r for r in summary["reasons"])
    ws = world.workspace(config)
    with Session(ws.engine) as s:
        assert s.exec(select(Review)).one().status == "approved"
        assert s.exec(select(PipelineRun)).one().status == "completed"
    assert audit.verify(ws.engine).ok


def test_waiting_run_that_times_out_is_rejected(prefect_api, keel_home):
    config, proc = _start_run(prefect_api, keel_home, timeout=3)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["decision"] == "rejected" and summary["production_version"] is None
    assert "timed out" in summary["reasons"][-1]
    with Session(world.workspace(config).engine) as s:
        assert s.exec(select(ModelVersion)).one().status == "rejected"
        assert s.exec(select(Review)).one().status == "rejected"
