"""keel tui --serve: the TUI in a browser through textual-serve, on the loopback interface only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(url: str, timeout: float = 30.0) -> str:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


def test_tui_serve_answers_with_html_on_loopback_only(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "KEEL_HOME": str(tmp_path / ".keel")}
    proc = subprocess.Popen([sys.executable, "-m", "keel", "tui", "--serve", "--port", str(port), "--read-only"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page = _fetch(f"http://127.0.0.1:{port}/")
        assert "<html" in page.lower()
        assert "textual" in page.lower()
        if Path("/proc/net/tcp").exists():  # bound to 127.0.0.1 (0100007F), never 0.0.0.0 or ::
            listening = _listening(port)
            assert listening and all(addr == "0100007F" for addr in listening), listening
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on ``port``; [] without /proc."""
    found = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(addr)
    return found
