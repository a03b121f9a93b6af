"""A cold command's wait for Prefect's temporary server is used for its store and the imports its run needs later."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from keel.core.data.demo import DEMO_CONFIG

PROBE = r"""
import json, sys
from types import SimpleNamespace
from keel.cli.pipeline import _import_while_server_starts
_import_while_server_starts(SimpleNamespace(url=sys.argv[1]), sys.argv[2])
print(json.dumps({m: m in sys.modules for m in ("lightgbm", "alibi_detect.cd")}))
"""


def _imported(url: str, config: str, home: Path) -> dict[str, bool]:
    """What the wait did in a fresh process and KEEL_HOME: the modules it imported, whether it made the store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")} | {"KEEL_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", PROBE, url, config], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "store": (home / "keel.db").exists()}


def test_the_store_is_opened_and_lightgbm_and_alibi_imported_while_the_server_does_not_answer_yet(tmp_path):
    config = tmp_path / "keel.toml"
    config.write_text(DEMO_CONFIG)
    with socket.socket() as s:  # a port nobody listens on: the server is still starting
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _imported(f"http://127.0.0.1:{port}/api", str(config), tmp_path / "a") == {
        "store": True, "lightgbm": True, "alibi_detect.cd": True}

    scipy_engine = tmp_path / "scipy.toml"
    assert 'engine = "alibi"' in DEMO_CONFIG
    scipy_engine.write_text(DEMO_CONFIG.replace('engine = "alibi"', 'engine = "scipy"'))
    assert _imported(f"http://127.0.0.1:{port}/api", str(scipy_engine), tmp_path / "b") == {
        "store": True, "lightgbm": True, "alibi_detect.cd": False}


def test_nothing_is_done_once_the_server_answers(tmp_path):
    config = tmp_path / "keel.toml"
    config.write_text(DEMO_CONFIG)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api"
        assert _imported(url, str(config), tmp_path / "c") == {"store": False, "lightgbm": False,
                                                               "alibi_detect.cd": False}
    finally:
        server.shutdown()
