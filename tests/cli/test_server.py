"""keel server: a long-lived Prefect server per KEEL_HOME that keel commands use, stale records handled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import registry_world as world

pytestmark = pytest.mark.slow


def _keel(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env["KEEL_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "keel", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _flow_runs(url: str) -> int:
    request = urllib.request.Request(f"{url}/flow_runs/count", data=b"{}", headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.read())


def test_two_homes_get_their_own_servers_and_keel_run_uses_its_homes(tmp_path):
    homes = [tmp_path / "a" / ".keel", tmp_path / "b" / ".keel"]
    urls = []
    try:
        for home in homes:
            out = _keel("server", "start", "--json", home=home, cwd=tmp_path)
            assert out.returncode == 0, out.stderr
            started = json.loads(out.stdout)
            assert started["started"] and started["url"].startswith("http://127.0.0.1:")
            urls.append(started["url"])
            again = json.loads(_keel("server", "start", "--json", home=home, cwd=tmp_path).stdout)
            assert not again["started"] and again["url"] == started["url"], "a second start finds the first"
        assert urls[0] != urls[1], "two homes on one machine do not collide"

        root = homes[0].parent
        config, batch = world.write_config(root), world.make_batch(root)
        run = _keel("run", str(batch), "--config", str(config), home=homes[0], cwd=root)
        assert run.returncode == 0, run.stderr
        assert run.stderr.count("using this home's Prefect server") == 1
        assert _flow_runs(urls[0]) == 1 and _flow_runs(urls[1]) == 0, "the run went to its own home's server"
        status = json.loads(_keel("server", "status", "--json", home=homes[0], cwd=root).stdout)
        assert status["running"] and status["healthy"] and status["url"] == urls[0]
    finally:
        for home in homes:
            _keel("server", "stop", home=home, cwd=tmp_path)
    for home in homes:
        status = json.loads(_keel("server", "status", "--json", home=home, cwd=tmp_path).stdout)
        assert not status["running"]
        assert "no Prefect server was running" in _keel("server", "stop", home=home, cwd=tmp_path).stdout


def test_a_stale_record_is_ignored_and_replaced(tmp_path):
    home = tmp_path / ".keel"
    (home / "prefect").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = home / "prefect" / "server.json"
    record.write_text(json.dumps({"pid": dead.pid, "port": 9, "url": "http://127.0.0.1:9/api", "log": "-"}))
    status = _keel("server", "status", home=home, cwd=tmp_path)
    assert status.returncode == 0 and "no Prefect server for this home" in status.stdout
    assert not record.exists(), "the stale record is removed"
    try:
        started = json.loads(_keel("server", "start", "--json", home=home, cwd=tmp_path).stdout)
        assert started["started"] and json.loads(record.read_text())["pid"] == started["pid"]
    finally:
        _keel("server", "stop", home=home, cwd=tmp_path)


def test_keel_run_without_a_server_starts_the_temporary_one_first_and_stops_it(tmp_path):
    """With no server set, `keel run` starts Prefect's temporary server itself before its heavy imports (so that
    the server's start-up overlaps them), runs the flow there without importing Prefect's server package, and
    leaves no server behind."""
    root = tmp_path / "p"
    root.mkdir()
    config, batch = world.write_config(root), world.make_batch(root)
    probe = ("import atexit, sys\n"
             "from keel.flows import local_server\n"
             "started = []\n"
             "init = local_server.TemporaryServer.__init__\n"
             "def spy(self, home):\n"
             "    init(self, home)\n"
             "    started.append(self)\n"
             "    print('HEAVY', sorted(m for m in ('polars', 'prefect', 'lightgbm') if m in sys.modules))\n"
             "local_server.TemporaryServer.__init__ = spy\n"
             "atexit.register(lambda: print('SERVER', 'prefect.server.api.server' in sys.modules,\n"
             "                              [s.proc for s in started], [s.url for s in started]))\n"
             "from keel.cli.main import main\n"
             "sys.argv = ['keel', 'run', sys.argv[1], '--config', sys.argv[2]]\n"
             "main()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env["KEEL_HOME"] = str(root / ".keel")
    out = subprocess.run([sys.executable, "-c", probe, str(batch), str(config)], env=env, cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "using this home's Prefect server" not in out.stderr
    assert "HEAVY []" in out.stdout, "the server starts before polars, Prefect and LightGBM are imported"
    line = next(x for x in out.stdout.splitlines() if x.startswith("SERVER "))
    assert line.startswith("SERVER False [None] ['http://127.0.0.1:"), line  # stopped; Prefect's own never started
    request = urllib.request.Request(line.split("'")[1].removesuffix("/api") + "/api/health")
    with pytest.raises(OSError):
        urllib.request.urlopen(request, timeout=2)
