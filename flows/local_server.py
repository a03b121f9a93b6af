"""A long-lived local Prefect server under KEEL_HOME (`keel server start|stop|status`).

Without one, every keel command starts Prefect's temporary server (several seconds). With one, commands use
it through PREFECT_API_URL. Each keel home has its own server on its own loopback port; its pid, port and URL
are recorded in KEEL_HOME/prefect/server.json, and a record whose process is gone (or is another program) is
stale and ignored. A user's own PREFECT_API_URL always wins.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from keel.core.errors import PrefectError
from keel.flows.prefect_db import server_env, server_started


@dataclass(frozen=True)
class LocalServer:
    pid: int
    port: int
    url: str
    log: str


def record_path(prefect_home: Path) -> Path:
    return prefect_home / "server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ProcessLookupError):
        return False
    return b"prefect" in cmdline and b"server" in cmdline


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until_healthy(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for a starting server to answer; False once it died or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


_Record = TypeVar("_Record")


def read_record(path: Path, kind: Callable[..., _Record], alive: Callable[[int], bool]) -> _Record | None:
    """A background process's record (a JSON object with its pid) when that process is alive; a stale record (the
    process gone, or the pid now another program's) is removed."""
    try:
        record = kind(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if alive(record.pid):  # type: ignore[attr-defined]
        return record
    path.unlink(missing_ok=True)
    return None


def end_process(pid: int, alive: Callable[[int], bool], timeout: float, group: bool = False) -> None:
    """SIGTERM (to its process group with `group`), then SIGKILL if it is still alive after `timeout` seconds."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def running(prefect_home: Path) -> LocalServer | None:
    """The home's server when its process is alive; a stale record is removed."""
    return read_record(record_path(prefect_home), LocalServer, _alive)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(prefect_home: Path) -> dict[str, str]:
    """A server's environment: this one without the API URL it is to serve (a client setting), and what a server
    in ``prefect_home`` needs (:func:`keel.flows.prefect_db.server_env`)."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | server_env(prefect_home)


def start(prefect_home: Path, timeout: float = 120.0) -> tuple[LocalServer, bool]:
    """Start the home's server unless it runs already; (server, started now)."""
    if (server := running(prefect_home)) is not None:
        return server, False
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = prefect_home / "server.log"
    env = _environment(prefect_home)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    if not wait_until_healthy(url, proc, timeout):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        raise PrefectError(f"the Prefect server did not start (see {log})")
    server_started(prefect_home)
    server = LocalServer(proc.pid, port, url, str(log))
    record_path(prefect_home).write_text(json.dumps(asdict(server)))
    return server, True


def stop(prefect_home: Path, timeout: float = 30.0) -> LocalServer | None:
    """Stop the home's server; None when none was running."""
    server = running(prefect_home)
    if server is None:
        return None
    end_process(server.pid, _alive, timeout, group=True)
    record_path(prefect_home).unlink(missing_ok=True)
    return server


# --- the temporary server, started early ------------------------------------------------------------------


class TemporaryServer:
    """Prefect's temporary server for one command, started as soon as the command knows it will run a flow, so
    that the server's start-up (its own imports, the database check: several seconds, mostly on another core)
    overlaps this process's imports and batch reading. The same server Prefect would start on first use
    (`prefect.server.api.server.SubprocessASGIServer`: uvicorn over `create_app`, UI off, marked ephemeral), started
    without importing Prefect's server package here, and stopped when the command exits."""

    def __init__(self, prefect_home: Path) -> None:
        self.prefect_home = prefect_home
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._ready: bool | None = None
        self._launch()
        atexit.register(self.stop)  # registered before Prefect's own handlers, so it runs after their flushes

    def _launch(self) -> None:
        import importlib.util

        spec = importlib.util.find_spec("prefect")
        app_dir = Path(next(iter(spec.submodule_search_locations or []))).parent if spec else Path(".")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        env = _environment(self.prefect_home)
        env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL)

    @property
    def used(self) -> bool:
        """Whether a flow run has waited for this server (and may still talk to it)."""
        return self._ready is not None

    def wait(self, timeout: float | None = None, attempts: int = 3) -> str | None:
        """The server's API URL once it answers; None when it could not start (Prefect then starts its own)."""
        if self._ready is None:
            if timeout is None:
                timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 90)
            for attempt in range(attempts):  # a port taken meanwhile by another program: uvicorn exits, retry
                assert self.proc is not None and self.url is not None
                self._ready = wait_until_healthy(self.url, self.proc, timeout)
                if self._ready:
                    server_started(self.prefect_home)
                if self._ready or self.proc.poll() is None or attempt == attempts - 1:
                    break
                self._launch()
            if not self._ready:
                self.stop()
        return self.url if self._ready else None

    def stop(self) -> None:
        proc, self.proc, self._ready = self.proc, None, False
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_temporary(prefect_home: Path) -> TemporaryServer | None:
    """Start the temporary server now unless runs go elsewhere: PREFECT_API_URL (the user's server, or this home's
    long-lived one, which configure_prefect put there) or ephemeral mode turned off."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    if os.environ.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true").strip().lower() in ("0", "false", "no", "off"):
        return None
    return TemporaryServer(prefect_home)
