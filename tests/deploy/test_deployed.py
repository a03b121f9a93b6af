"""keel deployed as a team runs it, end to end: a real `prefect server start` on PostgreSQL, a process work
pool, two `prefect worker start` processes, `prefect --no-prompt deploy --all` of the real prefect.yaml, the
keel store on PostgreSQL, artifacts and cached task results on an S3-compatible server (moto's) on loopback.
Six demo batches dropped into the inbox run in batch order, one at a time, and
end with the same dataset versions, model SHA-256s and gate decisions as the embedded default on the same
batches. A flagged run suspends (its worker holds nothing); one worker is killed with SIGKILL; `keel approve`
resumes the run and the other worker finishes it. A suspended run is no failure and fires no alert. Later a
worker is SIGKILLed with a run mid-way: Prefect marks the run Crashed when its heartbeats stop, the next
inbox scan starts the batch again, and the store ends as if nothing had happened.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import postgres_db
import pytest
from deployed_world import Deployment, make_project
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.slow

MONTHS = 6
LIMIT = 900  # seconds for the six batches
CRASH_AFTER = 75  # seconds without a heartbeat (beating every 30 s) before Prefect calls a run crashed


@pytest.fixture(scope="module")
def batches(flights: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("deployed-batches")
    paths = []
    for month in range(1, MONTHS + 1):
        part = flights.filter(pl.col("month") == month).sample(2000, seed=month).sort("time_hour", "flight_id")
        path = folder / f"flights-2013-{month:02d}.parquet"
        part.write_parquet(path)
        paths.append(path)
    return paths


def _config_text(wait: bool) -> str:
    from keel.core.data.demo import DEMO_CONFIG

    assert "max_churn = 0.10" in DEMO_CONFIG and "[review]" not in DEMO_CONFIG
    # every candidate that would replace production goes to a person
    text_ = DEMO_CONFIG.replace("max_churn = 0.10", "max_churn = 0.0")
    return text_ + ("\n[review]\nwait = true\n" if wait else "")


def _embedded(batches: list[Path], folder: Path) -> list[dict[str, Any]]:
    """The embedded default on the same batches; a review is approved before the next batch, as the
    deployed test does while its run waits."""
    from keel.core.config import Settings
    from keel.core.registry import transactions as registry
    from keel.core.workspace import Workspace
    from keel.flows.run_pipeline import run_pipeline

    folder.mkdir()
    config = folder / "keel.toml"
    config.write_text(_config_text(wait=False))
    home = folder / "home"
    out = []
    for batch in batches:
        summary = run_pipeline(batch=str(batch), config=str(config), home=str(home))
        ws = Workspace.open(config, Settings(home=home))
        reviewed = summary["decision"] == "review"
        if reviewed:
            registry.approve(ws, ws.cfg.model, summary["model_version"], "approved as in the deployed test",
                             actor="tester")
            summary["decision"], summary["production_version"] = "promoted", summary["model_version"]
        out.append({**_outcome(summary, ws), "reviewed": reviewed})
    return out


def _outcome(summary: dict[str, Any], ws: Any) -> dict[str, Any]:
    from keel.core.registry import transactions as registry

    sha = None
    if summary.get("model_version"):
        with ws.session() as session:
            sha = registry.get_version(session, ws.cfg.model, summary["model_version"]).artifact_sha256
    return {"dataset": summary["dataset_version"], "decision": summary["decision"], "model_sha256": sha,
            "production": summary["production_version"]}


@pytest.fixture
def deployment(tmp_path: Path, s3_bucket: str) -> Iterator[Deployment]:
    with postgres_db.fresh_database("keel_prefect", "postgresql+asyncpg") as prefect_db, \
            postgres_db.fresh_database("keel_store") as store_db:
        make_project(tmp_path, _config_text(wait=True))
        d = Deployment(tmp_path, prefect_db, store_db)  # the AWS_* environment of the S3 server comes along
        d.env["KEEL_ARTIFACTS_URL"] = f"s3://{s3_bucket}/keel"
        try:
            yield d
        finally:
            d.stop()


def test_six_batches_through_server_workers_and_postgres_match_the_embedded_default(
        prefect_server, batches, deployment, tmp_path, s3_client):
    expected = _embedded(batches, tmp_path / "embedded")
    reviews = sum(e.pop("reviewed") for e in expected)
    assert reviews, "the configuration sends a candidate to review"

    d = deployment
    d.start_server()
    d.prefect("work-pool", "create", "keel-process", "--type", "process")
    d.prefect("--no-prompt", "deploy", "--all")
    d.env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = "30"  # the workers' documented setting (Prefect's minimum)
    d.start_worker("w1")
    d.start_worker("w2")
    for batch in batches:
        shutil.copy2(batch, d.project / "incoming" / batch.name)

    killed, approved, killed_mid_run, last_scan = False, set(), None, 0.0
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        runs = d.runs()
        done = [r for r in runs if r["status"] in ("completed", "quarantined")]
        if len(done) >= MONTHS:
            break
        waiting = [r for r in runs if r["status"] == "waiting" and r["id"] not in approved]
        for run in waiting:
            version = _candidate(d, run)
            if version is None:
                continue
            if not killed:  # the suspended run holds no worker: kill one, the other must finish the run
                d.kill("w1")
                killed = True
            out = d.keel("approve", "flights-delay", str(version), "--reason", "looks right")
            assert out.returncode == 0, out.stderr
            approved.add(run["id"])
        if approved and killed_mid_run is None:
            late = [r for r in runs if r["status"] == "running" and Path(r["source"]).name >= batches[3].name
                    and _stages(d, r["id"]) >= 2]
            if late:  # a run mid-way: its worker and the flow run under it die, a new worker comes up
                killed_mid_run = late[0]["id"]
                d.kill("w2")
                d.start_worker("w3")
        if time.monotonic() - last_scan > 10:  # the schedule's scans, sooner
            d.prefect("deployment", "run", "scan_inbox/inbox", "-p", f"crash_after={CRASH_AFTER}")
            last_scan = time.monotonic()
        time.sleep(2)
    else:
        pytest.fail(f"the batches did not finish in {LIMIT} s: {[(r['source'], r['status']) for r in d.runs()]}\n"
                    + d.log("w3")[-3000:])

    runs = [r for r in d.runs() if r["status"] in ("completed", "quarantined")]
    assert [Path(r["source"]).name for r in runs] == [b.name for b in batches], "one at a time, in batch order"
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert earlier["finished_at"] <= later["started_at"], "a model's runs never overlap"
    assert killed and approved, "a run suspended for its review and a worker was killed meanwhile"
    assert killed_mid_run, "a worker was killed with a run mid-way"
    status = {r["id"]: r["status"] for r in d.runs()}
    assert status[killed_mid_run] == "abandoned", "the killed run is closed by the run that finished its batch"
    got = [{"dataset": r["batch_id"], "decision": r["decision"],
            "model_sha256": _sha(d, r["summary"].get("model_version")),
            "production": r["summary"]["production_version"]} for r in runs]
    assert got == expected
    assert reviews == len(approved)
    engine = create_engine(d.store_db)
    with engine.connect() as conn:
        failures = conn.execute(text("SELECT count(*) FROM alert WHERE rule = 'failure'")).scalar()
        failed = conn.execute(text("SELECT count(*) FROM pipeline_run WHERE status = 'failed'")).scalar()
    engine.dispose()
    assert failures == 0 and failed == 0, "a suspended run is not a failure"
    with engine.connect() as conn:
        uris = conn.execute(text("SELECT artifact_uri FROM model_version UNION ALL "
                                 "SELECT artifact_uri FROM dataset_version")).scalars().all()
    engine.dispose()
    bucket = d.env["KEEL_ARTIFACTS_URL"].removeprefix("s3://").split("/")[0]
    assert uris and all(u.startswith(f"s3://{bucket}/keel/") for u in uris), "artifacts live in object storage"
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {u.removeprefix(f"s3://{bucket}/") for u in uris} <= keys
    assert any(k.startswith("keel/prefect-results/") for k in keys), "cached task results live there too"
    assert not (d.root / "keel-home" / "artifacts").exists()


def _candidate(d: Deployment, run: dict[str, Any]) -> int | None:
    engine = create_engine(d.store_db)
    with engine.connect() as conn:
        version = conn.execute(text(
            "SELECT mv.version FROM review r JOIN model_version mv ON mv.id = r.candidate_version_id "
            "WHERE r.run_id = :run AND r.status = 'open'"), {"run": run["id"]}).scalar()
    engine.dispose()
    return version


def _stages(d: Deployment, run_id: str) -> int:
    engine = create_engine(d.store_db)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM stage_run WHERE run_id = :r"), {"r": run_id}).scalar()
    engine.dispose()
    return int(n or 0)


def _sha(d: Deployment, version: int | None) -> str | None:
    if version is None:
        return None
    engine = create_engine(d.store_db)
    with engine.connect() as conn:
        sha = conn.execute(text("SELECT artifact_sha256 FROM model_version WHERE version = :v"), {"v": version}).scalar()
    engine.dispose()
    return sha
