"""The keel command as a user runs it: real subprocesses, exit codes, one-line errors, untouched store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest


def keel(*args: str, cwd: Path, env_home: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "KEEL_HOME": str(env_home)}
    return subprocess.run([sys.executable, "-m", "keel", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _store_state(home: Path) -> str:
    """A fingerprint of everything under KEEL_HOME except Prefect's own state."""
    digest = hashlib.sha256()
    for path in sorted(home.rglob("*")) if home.exists() else []:
        if path.is_file() and "prefect" not in path.parts and not path.name.endswith(("-wal", "-shm")):
            digest.update(str(path.relative_to(home)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def project(tmp_path: Path, demo_slices) -> Path:
    (tmp_path / "keel.toml").write_text(
        'model = "flights-delay"\ntarget = "delayed"\npositive = 1\nid = "flight_id"\ntimestamp = "time_hour"\n'
        'exclude = ["year", "month", "day", "dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum", "flight"]\n'
        '[contract]\nranges = { distance = [1, 6000] }\n')
    return tmp_path


def _bad_inputs(project: Path, demo_slices) -> dict[str, tuple[list[str], str]]:
    (project / "empty.csv").write_text("")
    (project / "corrupt.parquet").write_bytes(b"PAR1" + bytes(range(200)))
    pl.read_parquet(demo_slices[0]).drop("delayed").write_parquet(project / "no-target.parquet")
    (project / "unknown.toml").write_text('model = "m"\ntarget = "delayed"\ncolor = "red"\n')
    good = str(demo_slices[0])
    return {
        "wrong path": (["run", "does/not/exist.parquet"], "no such file"),
        "unknown config key": (["run", good, "--config", "unknown.toml"], "unknown key 'color'"),
        "missing config": (["run", good, "--config", "nope.toml"], "no such configuration file"),
        "missing target column": (["run", "no-target.parquet"], "target column 'delayed' is missing"),
        "empty file": (["run", "empty.csv"], "empty"),
        "corrupt file": (["run", "corrupt.parquet"], "cannot read parquet"),
        "bad months": (["demo", "--months", "13"], "13"),
    }


@pytest.mark.slow  # keel run and keel demo in subprocesses
def test_bad_input_gives_one_line_and_exit_2_and_leaves_the_store_alone(project, demo_slices):
    home = project / ".keel"
    before = _store_state(home)
    for name, (args, message) in _bad_inputs(project, demo_slices).items():
        result = keel(*args, cwd=project, env_home=home)
        assert result.returncode == 2, f"{name}: exit {result.returncode}: {result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) <= 3 and "Traceback" not in result.stderr, f"{name}: {result.stderr}"
        assert message in result.stderr, f"{name}: {result.stderr}"
    assert _store_state(home) == before


@pytest.mark.slow  # keel run in a subprocess, the pipeline on real data
def test_run_json_and_quarantine_exit_code_through_the_real_command(project, demo_slices):
    home = project / ".keel"
    result = keel("run", str(demo_slices[0]), "--json", cwd=project, env_home=home)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("run_id", "status", "dataset_version", "drift", "metrics", "model_version", "decision",
                "reasons", "production_version"):
        assert key in summary
    assert summary["status"] == "completed" and summary["decision"] == "promoted"
    assert summary["production_version"] == 1

    bad = pl.read_parquet(demo_slices[1]).with_columns(pl.lit(-5).alias("distance"))
    bad.write_parquet(project / "bad.parquet")
    result = keel("run", "bad.parquet", cwd=project, env_home=home)
    assert result.returncode == 3
    assert "quarantined" in result.stderr and "Traceback" not in result.stderr

    listing = keel("models", "--json", cwd=project, env_home=home)
    models = json.loads(listing.stdout)
    assert [(m["name"], m["version"], m["aliases"]) for m in models] == [("flights-delay", 1, ["production"])]
    runs = json.loads(keel("runs", "--json", cwd=project, env_home=home).stdout)
    assert [r["status"] for r in runs] == ["quarantined", "completed"]


def test_init_writes_a_config_that_loads(tmp_path, demo_slices):
    result = keel("init", "--model", "delays", "--target", "delayed", "--data", str(demo_slices[0]),
                  cwd=tmp_path, env_home=tmp_path / ".keel")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "keel.toml").read_text()
    assert 'model = "delays"' in text and "[gate]" in text and "carrier: string" in text
    again = keel("init", cwd=tmp_path, env_home=tmp_path / ".keel")
    assert again.returncode == 2 and "exists already" in again.stderr
