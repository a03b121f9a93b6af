"""keel replay: a quarantined batch runs again from its stored copy under the current keel.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from sqlmodel import Session, select
from store_snapshot import snapshot

from keel.core.store.models import AuditEvent, PipelineRun, Quarantine

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]  # a Prefect server, real pipeline runs


@pytest.fixture(scope="module")
def api_url(prefect_server) -> str:
    """The session's Prefect server, shared with the subprocesses so none starts its own."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _replay(prefix: str, config: Path, api_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEEL_HOME": os.environ["KEEL_HOME"], "PREFECT_API_URL": api_url}
    return subprocess.run([sys.executable, "-m", "keel", "replay", prefix, "--config", str(config), "--json"],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=600)


def _engine():
    from keel.core.workspace import open_store

    return open_store()


def _quarantine(dataset_id: str) -> list[Quarantine]:
    with Session(_engine()) as s:
        return list(s.exec(select(Quarantine).where(Quarantine.dataset_id == dataset_id)))


def _snapshot() -> dict:
    return snapshot(_engine())


def test_replay_after_widening_a_range_runs_the_batch_and_marks_it_replayed_once(
        demo_slices, demo_config, tmp_path, api_url):
    from keel.flows.run_pipeline import run_pipeline

    run_pipeline(batch=str(demo_slices[0]), config=str(demo_config))
    bad = pl.read_parquet(demo_slices[1]).with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(-10).otherwise(pl.col("distance")).alias("distance"))
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    quarantined = run_pipeline(batch=str(path), config=str(demo_config))
    assert quarantined["status"] == "quarantined"
    dataset = quarantined["dataset_version"]
    path.unlink()  # the replay reads the immutable stored copy, not the file that came in
    assert len(_quarantine(dataset)) == 601 and not any(q.replayed for q in _quarantine(dataset))

    # unchanged keel.toml: a replay of the quarantined run, quarantined again (exit 3), nothing marked
    same = _replay(dataset[:10], demo_config, api_url)
    assert same.returncode == 3, same.stderr
    assert json.loads(same.stdout)["status"] == "quarantined"
    assert not any(q.replayed for q in _quarantine(dataset))

    # the operator widens the declared range: the whole pipeline runs on the stored copy
    text = demo_config.read_text()
    assert "distance = [1, 6000]" in text
    demo_config.write_text(text.replace("distance = [1, 6000]", "distance = [-100, 6000]"))
    done = _replay(dataset[:10], demo_config, api_url)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and summary["dataset_version"] == dataset
    assert summary.get("replay_of") is None and summary.get("quarantined_rows", 0) == 0
    assert summary["marked_replayed"] == 601
    with Session(_engine()) as s:
        run = s.get(PipelineRun, summary["run_id"])
        events = [e for e in s.exec(select(AuditEvent)) if e.action == "quarantine:replay"]
    assert run.status == "completed" and run.batch_id == dataset
    assert all(q.replayed for q in _quarantine(dataset))
    assert len(events) == 1 and events[0].details["run_id"] == summary["run_id"]

    # a second replay under the same keel.toml replays that run: nothing changes
    before = _snapshot()
    again = _replay(dataset, demo_config, api_url)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["replay_of"] == summary["run_id"] and second["marked_replayed"] == 0
    assert _snapshot() == before


def test_replay_of_an_unknown_or_malformed_id_is_one_line_and_exit_2(demo_config, api_url):
    for prefix in ("ffff0000ffff", "xyz"):
        out = _replay(prefix, demo_config, api_url)
        assert out.returncode == 2
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("keel: "), out.stderr
