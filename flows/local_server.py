"""A long-lived local Prefect server under KEEL_HOME (`keel server start|stop|status`).

Without one, every keel command starts Prefect's temporary server (several seconds). With one, commands use
it through PREFECT_API_URL. Each keel home has its own server on its own loopback port; its pid, port and URL
are recorded in KEEL_HOME/prefect/server.json, and a record whose process is gone (or is another program) is
stale and ignored. A user's own PREFECT_API_URL always wins.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from keel.core.errors import PrefectError


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


def running(prefect_home: Path) -> LocalServer | None:
    """The home's server when its process is alive; a stale record is removed."""
    path = record_path(prefect_home)
    try:
        server = LocalServer(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(server.pid):
        return server
    path.unlink(missing_ok=True)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(prefect_home: Path, timeout: float = 120.0) -> tuple[LocalServer, bool]:
    """Start the home's server unless it runs already; (server, started now)."""
    if (server := running(prefect_home)) is not None:
        return server, False
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = prefect_home / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    if not wait_until_healthy(url, proc, timeout):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        raise PrefectError(f"the Prefect server did not start (see {log})")
    server = LocalServer(proc.pid, port, url, str(log))
    record_path(prefect_home).write_text(json.dumps(asdict(server)))
    return server, True


def stop(prefect_home: Path, timeout: float = 30.0) -> LocalServer | None:
    """Stop the home's server; None when none was running."""
    server = running(prefect_home)
    if server is None:
        return None
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while _alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(server.pid):
        os.killpg(server.pid, signal.SIGKILL)
    record_path(prefect_home).unlink(missing_ok=True)
    return server
