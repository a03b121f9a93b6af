"""keel deployed as a team runs it, for tests and benchmarks: a real `prefect server start` (its database on
PostgreSQL), a process work pool, `prefect --no-prompt deploy --all` of the real prefect.yaml from a clean
copy of the repository, `prefect worker start` processes, the keel store on PostgreSQL. Everything runs as
subprocesses on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return out


class Deployment:
    """The server, the pool, the deployments and the workers, as subprocesses of the test."""

    def __init__(self, root: Path, prefect_db: str, store_db: str) -> None:
        self.root, self.project = root, root / "project"
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.store_db = store_db
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
        self.env.update({
            "PREFECT_API_URL": self.api, "PREFECT_HOME": str(root / "prefect-client"), "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING", "KEEL_HOME": str(root / "keel-home"), "KEEL_DATABASE_URL": store_db,
        })
        self.server_env = {**self.env, "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db,
                           "PREFECT_HOME": str(root / "prefect-server")}
        self.server_env.pop("PREFECT_API_URL")
        self.procs: dict[str, subprocess.Popen] = {}
        self.bin = Path(sys.executable).parent

    def start_server(self) -> None:
        self.procs["server"] = self._spawn("server", [str(self.bin / "prefect"), "server", "start", "--host",
                                                      "127.0.0.1", "--port", str(self.port)], self.server_env)
        from keel.flows.local_server import wait_until_healthy

        if not wait_until_healthy(self.api, self.procs["server"], 180):
            raise RuntimeError("prefect server did not start: " + self.log("server")[-2000:])

    def prefect(self, *args: str) -> str:
        out = subprocess.run([str(self.bin / "prefect"), *args], cwd=self.project, env=self.env,
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed: " + out.stdout[-3000:] + out.stderr[-3000:])
        return out.stdout

    def keel(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "keel", *args], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=300)

    def start_worker(self, name: str) -> None:
        # from another folder than the project, as a worker on another machine would be
        self.procs[name] = self._spawn(name, [str(self.bin / "prefect"), "worker", "start", "--pool", "keel-process",
                                              "--name", name], self.env, cwd=self.root)

    def kill(self, name: str) -> None:
        """SIGKILL a worker and every process under it (the flow runs it started), as a lost machine would."""
        proc = self.procs[name]
        for pid in [*_descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(cmd, env=env, cwd=cwd or self.project, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM if name == "server" else signal.SIGKILL)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    def runs(self) -> list[dict[str, Any]]:
        engine = create_engine(self.store_db)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT id, flow_run_id, batch_id, source, status, decision, started_at, finished_at, summary "
                    "FROM pipeline_run WHERE flow = 'run_pipeline' ORDER BY started_at")).mappings().all()
        except Exception:  # the store is created by the first run
            return []
        finally:
            engine.dispose()
        return [dict(r) for r in rows]


def make_project(root: Path, config_text: str) -> Path:
    """A clean copy of the repository (what git tracks), with the team's keel.toml and an inbox."""
    project = root / "project"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    (project / "keel.toml").write_text(config_text)
    (project / "incoming").mkdir()
    return project
