"""`keel` in a subprocess against the session's Prefect server, for the fault tests: a project folder per home,
its own Prefect result storage (no cache shared with another home), a process's address-space high-water mark."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def api_url() -> str:
    """The session's Prefect server (the prefect_server fixture must be up), shared so no subprocess starts one."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def project(folder: Path, config: str) -> Path:
    """A project folder with ``config`` as keel.toml; returns its KEEL_HOME."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keel.toml").write_text(config)
    return folder / ".keel"


def env_for(home: Path, api: str, **extra: str) -> dict[str, str]:
    """The environment of a keel command on ``home``: task results under the home, so nothing is a cache hit
    of another home's run (a cached train would never allocate)."""
    return {**os.environ, "KEEL_HOME": str(home), "PREFECT_API_URL": api,
            "PREFECT_LOCAL_STORAGE_PATH": str(home.parent / "prefect-results"), **extra}


def start(*args: str, home: Path, api: str, preexec: Callable[[], None] | None = None,
          **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "keel", *args], cwd=home.parent, env=env_for(home, api, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def keel(*args: str, home: Path, api: str, preexec: Callable[[], None] | None = None,
         **extra: str) -> subprocess.CompletedProcess:
    proc = start(*args, home=home, api=api, preexec=preexec, **extra)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def engine(home: Path):  # noqa: ANN201
    from keel.core.config import Settings
    from keel.core.workspace import open_store

    return open_store(Settings(home=home))


def vm_peak(pid: int) -> int | None:
    """The process's largest address space so far (VmPeak), in bytes; None once it has exited."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmPeak:\s+(\d+) kB", text)
    return int(found.group(1)) * 1024 if found else None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
