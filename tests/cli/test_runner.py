"""keel's runner: `keel server start` starts a warm process that runs `keel run`, `demo` and `replay` for the
`keel` command, which then imports none of the pipeline's libraries; same output, exit codes and records as a
command run in its own process; Ctrl-C reaches the command; other code, a dead runner or KEEL_RUNNER=off make
the command run in its own process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import registry_world as world

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env["KEEL_HOME"] = str(home)
    env.update(extra)
    return env


def _keel(*args: str, home: Path, cwd: Path, python: tuple[str, ...] = (sys.executable,),
          **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*python, "-m", "keel", *args], env=_env(home, **extra), cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _imported(stderr: str) -> set[str]:
    """Top-level packages a `python -X importtime` process imported (its own imports, not the runner's)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def _stage_rows(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "keel.db") as db:
        return db.execute("select s.name, s.status from stage_run s join pipeline_run r on r.id = s.run_id "
                          "order by r.started_at, s.id").fetchall()


@pytest.fixture
def served(tmp_path):
    """A project with two homes: one with `keel server start` (a runner), one without."""
    root = tmp_path / "p"
    root.mkdir()
    config = world.write_config(root)
    batches = [world.make_batch(root, seed=i, name=f"b{i}.parquet") for i in range(2)]
    home = root / ".keel"
    started = _keel("server", "start", "--json", home=home, cwd=root)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert info["runner"]["started"] and info["runner"]["pid"] > 0
    try:
        yield root, config, batches, home, info
    finally:
        _keel("server", "stop", home=home, cwd=root)


def test_keel_run_is_run_by_the_runner_and_imports_none_of_the_pipelines_libraries(served, tmp_path):
    root, config, batches, home, info = served
    out = _keel("run", str(batches[0]), "--config", str(config), "--json", home=home, cwd=root,
                python=(sys.executable, "-X", "importtime"))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "completed" and summary["decision"] == "promoted"
    heavy = _imported(out.stderr) & {"prefect", "lightgbm", "alibi_detect", "sqlmodel", "sqlalchemy", "polars",
                                     "numpy", "scipy"}
    assert not heavy, f"the keel process imported {heavy}: the command was not run by the runner"
    assert "using this home's Prefect server" in out.stderr

    # the same batch in a home without a runner: the same summary, the same stage rows
    alone = tmp_path / "alone" / ".keel"
    own = _keel("run", str(batches[0]), "--config", str(config), "--json", home=alone, cwd=root)
    assert own.returncode == 0, own.stderr
    mine = json.loads(own.stdout)
    for key in ("run_id", "batch"):
        summary.pop(key), mine.pop(key)
    assert summary == mine
    assert _stage_rows(home) == _stage_rows(alone)

    status = json.loads(_keel("server", "status", "--json", home=home, cwd=root).stdout)
    assert status["runner"]["pid"] == info["runner"]["pid"], "the runner serves on: one command, one child"


def test_bad_input_through_the_runner_is_one_line_and_the_same_exit_code(served):
    root, config, _, home, _ = served
    bad = root / "bad.csv"
    bad.write_text("not,a\nbatch")
    for args in (["run", str(root / "missing.parquet"), "--config", str(config)],
                 ["run", str(bad), "--config", str(config)],
                 ["run", str(bad), "--config", str(root / "nope.toml")]):
        served_out = _keel(*args, home=home, cwd=root)
        own = _keel(*args, home=home, cwd=root, KEEL_RUNNER="off")
        assert served_out.returncode == own.returncode != 0, (args, served_out.stderr, own.stderr)
        lines = [x for x in served_out.stderr.splitlines() if "using this home's Prefect server" not in x]
        assert len(lines) == 1 and lines[0].startswith("keel: ") and "Traceback" not in served_out.stderr, lines
        assert lines == [x for x in own.stderr.splitlines() if "using this home's Prefect server" not in x]


def test_the_command_keeps_its_processs_umask_and_limits(served):
    """The child runs under the `keel` process's umask and `ulimit`s, not the runner's: a file-size limit smaller
    than the store refuses its writes there as it does in a process of its own."""
    import resource

    root, config, batches, home, _ = served

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 << 10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    outs = [subprocess.run([sys.executable, "-m", "keel", "run", str(batches[0]), "--config", str(config)],
                           env=_env(home, **extra), cwd=root, capture_output=True, text=True, timeout=300,
                           preexec_fn=small_files) for extra in ({}, {"KEEL_RUNNER": "off"})]
    assert outs[0].returncode == outs[1].returncode != 0, [o.stderr for o in outs]
    for out in outs:
        lines = [x for x in out.stderr.splitlines() if "using this home's Prefect server" not in x]
        assert len(lines) == 1 and lines[0].startswith("keel: ") and "Traceback" not in out.stderr, out.stderr
    for leftover in [*home.glob("keel.db*"), home / "artifacts"]:  # what the refused run began
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)

    private = subprocess.run([sys.executable, "-m", "keel", "run", str(batches[0]), "--config", str(config)],
                             env=_env(home), cwd=root, capture_output=True, text=True, timeout=300,
                             preexec_fn=lambda: os.umask(0o077))
    assert private.returncode == 0, private.stderr
    modes = {oct(p.stat().st_mode & 0o777) for p in (home / "artifacts").rglob("*") if p.is_file()}
    assert modes == {"0o600"}, modes


def test_ctrl_c_reaches_the_command_and_the_runner_serves_on(served):
    root, config, batches, home, _ = served
    proc = subprocess.Popen([sys.executable, "-m", "keel", "run", str(batches[1]), "--config", str(config)],
                            env=_env(home), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (home / "keel.db").exists() and time.monotonic() < deadline:  # the child has begun the run
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.rstrip().endswith("keel: interrupted"), (proc.returncode, err)
    again = _keel("run", str(batches[1]), "--config", str(config), "--json", home=home, cwd=root)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "completed", again.stderr


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the finalizer's, on purpose
def test_a_ctrl_c_that_python_swallows_in_a_finalizer_stops_the_run_at_the_next_crash_point():
    from keel.core.faults import crash_point, interrupt

    class Finalized:
        def __del__(self) -> None:  # Ctrl-C arrives while Python runs a finalizer, which swallows what it raises
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):
                pass

    before = signal.signal(signal.SIGINT, interrupt)
    try:
        Finalized()  # dropped at once: its __del__ runs here and the KeyboardInterrupt is "ignored"
        with pytest.raises(KeyboardInterrupt):
            crash_point("score:start")
        crash_point("score:done")  # once: the interrupt is not raised again
    finally:
        signal.signal(signal.SIGINT, before)


def test_other_code_a_dead_runner_or_keel_runner_off_run_the_command_in_its_own_process(served, tmp_path):
    root, config, batches, home, info = served
    # keel's source copied and edited: the runner refuses it, once, and the command runs here
    src = tmp_path / "src"
    shutil.copytree(REPO / "keel", src / "keel")
    for package in ("core", "flows", "tui", "cli"):
        shutil.copytree(REPO / package, src / "keel" / package)
    (src / "keel" / "core" / "edited.py").write_text("# an edit the runner has not imported\n")
    edited = _keel("run", str(batches[0]), "--config", str(config), home=home, cwd=root,
                   python=(sys.executable, "-X", "importtime"), PYTHONPATH=str(src))
    assert edited.returncode == 0, edited.stderr
    assert edited.stderr.count("runs other keel code or packages") == 1
    assert "prefect" in _imported(edited.stderr), "the command ran in its own process"

    off = _keel("run", str(batches[0]), "--config", str(config), home=home, cwd=root,
                python=(sys.executable, "-X", "importtime"), KEEL_RUNNER="off")
    assert off.returncode == 0 and "polars" in _imported(off.stderr)

    os.kill(info["runner"]["pid"], signal.SIGKILL)
    time.sleep(0.5)
    dead = _keel("run", str(batches[0]), "--config", str(config), home=home, cwd=root,
                 python=(sys.executable, "-X", "importtime"))
    assert dead.returncode == 0 and "polars" in _imported(dead.stderr), dead.stderr
    assert not (home / "prefect" / "runner.json").exists(), "the dead runner's record is removed"
    status = _keel("server", "status", home=home, cwd=root)
    assert "no keel runner" in status.stdout
    restarted = json.loads(_keel("server", "start", "--json", home=home, cwd=root).stdout)
    assert not restarted["started"] and restarted["runner"]["started"], "start brings the runner back"


def test_server_stop_stops_the_runner(served):
    root, _, _, home, info = served
    stopped = _keel("server", "stop", home=home, cwd=root)
    assert f"stopped keel's runner (pid {info['runner']['pid']})" in stopped.stdout
    status = json.loads(_keel("server", "status", "--json", home=home, cwd=root).stdout)
    assert status["runner"] is None and not status["running"]
    try:  # gone, or a zombie waiting for its parent (init) to collect it
        state = Path(f"/proc/{info['runner']['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z", "X"), state
