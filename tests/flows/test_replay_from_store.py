"""A rerun answered from the store (keel.core.pipeline.recall) is the rerun the flow would make: the same summary,
the same stages, nothing else changed; and it is refused whenever the flow could answer differently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from sqlmodel import Session, select
from store_snapshot import snapshot

from keel.core.data.demo import DEMO_CONFIG
from keel.core.store.models import DatasetVersion, PipelineRun, StageRun

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

RUN_ROW = ("status", "decision", "reasons", "batch_id", "config_hash", "code_hash", "production_before",
           "production_after", "model_version_id")


def _flow(batch: Path | str, config: Path) -> dict:
    from keel.flows.run_pipeline import run_pipeline

    return run_pipeline(batch=str(batch), config=str(config))


def _recall(batch: Path | str, config: Path) -> dict | None:
    from keel.core.pipeline.recall import replay_from_store
    from keel.core.workspace import Workspace

    return replay_from_store(Workspace.open(str(config)), str(batch))


def _engine():
    from keel.core.workspace import open_store

    return open_store()


def _stages(run_id: str) -> list[tuple]:
    with Session(_engine()) as s:
        rows = s.exec(select(StageRun).where(StageRun.run_id == run_id).order_by(StageRun.id))
        return [(r.name, r.status, r.detail) for r in rows]


def _row(run_id: str) -> dict:
    with Session(_engine()) as s:
        run = s.get(PipelineRun, run_id)
        return {k: getattr(run, k) for k in RUN_ROW}


def _same(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "run_id"}


def _quarantined_batch(demo_slices: list[Path], folder: Path) -> Path:
    bad = pl.read_parquet(demo_slices[1]).with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(-10).otherwise(pl.col("distance")).alias("distance"))
    path = folder / "bad.parquet"
    bad.write_parquet(path)
    return path


def test_a_replay_from_the_store_is_the_replay_the_flow_makes(demo_slices, demo_config, tmp_path):
    batches = [*demo_slices[:3], _quarantined_batch(demo_slices, tmp_path)]
    first = [_flow(b, demo_config) for b in batches]
    assert [f["status"] for f in first] == ["completed", "completed", "completed", "quarantined"]
    assert any(f["model_version"] for f in first[1:]), "a later month trained a candidate"
    for batch, original in zip(batches, first, strict=True):
        by_flow = _flow(batch, demo_config)
        before = snapshot(_engine())
        recalled = _recall(batch, demo_config)
        assert recalled is not None, f"{batch.name} is answered from the store"
        assert snapshot(_engine()) == before, "a replay from the store writes only its run and stage rows"
        assert by_flow["replay_of"] == recalled["replay_of"] == original["run_id"]
        assert _same(recalled) == _same(by_flow), f"{batch.name}: the same summary as the flow's replay"
        assert _stages(recalled["run_id"]) == _stages(by_flow["run_id"]) == _stages(original["run_id"])
        assert _row(recalled["run_id"]) == _row(by_flow["run_id"])
    with Session(_engine()) as s:
        cached = {(r.name, r.cached) for r in s.exec(select(StageRun).where(StageRun.run_id == recalled["run_id"]))}
    assert cached == {(name, True) for name, _ in cached}, "every stage of a replay from the store is a cache hit"


def test_a_rerun_the_flow_could_answer_differently_is_not_answered_from_the_store(demo_slices, demo_config,
                                                                                  tmp_path):
    first = [_flow(b, demo_config) for b in demo_slices[:2]]
    assert _recall(demo_slices[2], demo_config) is None, "a batch never run"
    assert _recall(tmp_path / "missing.parquet", demo_config) is None, "no file: the flow says what is wrong"
    assert _recall("s3://bucket/flights.parquet", demo_config) is None, "a URL is fetched by the flow"

    changed = tmp_path / "changed.toml"
    changed.write_text(DEMO_CONFIG.replace("[drift]", "[drift]\np_value = 0.01", 1))
    assert "p_value = 0.01" in changed.read_text()
    assert _recall(demo_slices[1], changed) is None, "another keel.toml: its stages may differ"

    with Session(_engine()) as s:  # the first run as an older keel would have recorded it
        run = s.get(PipelineRun, first[1]["run_id"])
        code, run.code_hash = run.code_hash, "0" * 64
        s.add(run)
        s.commit()
    assert _recall(demo_slices[1], demo_config) is None, "a run made by other code"
    with Session(_engine()) as s:
        run = s.get(PipelineRun, first[1]["run_id"])
        run.code_hash = code
        s.add(run)
        s.commit()

    with Session(_engine()) as s:
        copy = Path(s.get(DatasetVersion, first[1]["dataset_version"]).artifact_uri)
    kept = copy.read_bytes()
    copy.unlink()
    assert _recall(demo_slices[1], demo_config) is None, "its stored copy is gone: the flow stores it again"
    again = _flow(demo_slices[1], demo_config)
    assert again["replay_of"] == first[1]["run_id"] and copy.read_bytes() == kept
    assert _recall(demo_slices[1], demo_config)["replay_of"] == first[1]["run_id"]


def test_keel_run_on_a_batch_it_has_run_replays_without_importing_prefect(demo_slices, demo_config, tmp_path):
    first = _flow(demo_slices[0], demo_config)
    probe = tmp_path / "modules.txt"
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: open({str(probe)!r}, 'w').write(' '.join(sorted(sys.modules))))\n"
            "from keel.cli.main import main\n"
            f"sys.argv = ['keel', 'run', {str(demo_slices[0])!r}, '--config', {str(demo_config)!r}]\n"
            "main()\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"(replay of {first['run_id'][:8]})" in done.stdout
    modules = set(probe.read_text().split())
    assert "keel.core.pipeline.recall" in modules
    assert not {m for m in modules if m == "prefect" or m.startswith(("prefect.", "lightgbm", "alibi_detect"))}
