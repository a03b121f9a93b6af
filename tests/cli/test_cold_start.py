"""A cold command's wait for Prefect's temporary server is used for the imports its run needs later."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from keel.core.data.demo import DEMO_CONFIG

PROBE = r"""
import json, sys
from types import SimpleNamespace
from keel.cli.pipeline import _import_while_server_starts
_import_while_server_starts(SimpleNamespace(url=sys.argv[1]), sys.argv[2])
print(json.dumps({m: m in sys.modules for m in ("lightgbm", "alibi_detect.cd")}))
"""


def _imported(url: str, config: str) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE, url, config], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lightgbm_and_alibi_are_imported_while_the_server_does_not_answer_yet(tmp_path):
    config = tmp_path / "keel.toml"
    config.write_text(DEMO_CONFIG)
    with socket.socket() as s:  # a port nobody listens on: the server is still starting
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _imported(f"http://127.0.0.1:{port}/api", str(config)) == {"lightgbm": True, "alibi_detect.cd": True}

    scipy_engine = tmp_path / "scipy.toml"
    assert 'engine = "alibi"' in DEMO_CONFIG
    scipy_engine.write_text(DEMO_CONFIG.replace('engine = "alibi"', 'engine = "scipy"'))
    assert _imported(f"http://127.0.0.1:{port}/api", str(scipy_engine)) == {"lightgbm": True,
                                                                            "alibi_detect.cd": False}


def test_nothing_is_imported_once_the_server_answers(tmp_path):
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
        assert _imported(url, str(config)) == {"lightgbm": False, "alibi_detect.cd": False}
    finally:
        server.shutdown()
