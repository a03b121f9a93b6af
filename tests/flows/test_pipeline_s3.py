"""The pipeline with its artifacts and cached task results on S3 (moto's server on loopback), under the session's
real Prefect server: everything lands in the bucket, a rerun replays from it, a second machine (another
KEEL_HOME, the same store and bucket) replays from it too, and a tampered model in the bucket is caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from keel.core.config import Settings
from keel.core.store.models import DatasetVersion, ModelVersion, StageRun

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

HEAVY = ("validate", "score", "drift", "monitor", "train", "evaluate")  # the tasks cached on content


@pytest.fixture
def on_s3(s3_bucket, keel_home, monkeypatch) -> str:
    """KEEL_ARTIFACTS_URL on a new bucket; returns the URL."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # made under another test's environment
    url = f"s3://{s3_bucket}/keel"
    monkeypatch.setenv("KEEL_ARTIFACTS_URL", url)
    return url


def _run(batch: Path, config: Path) -> dict:
    from keel.flows.run_pipeline import run_pipeline

    return run_pipeline(batch=str(batch), config=str(config))


def _keys(s3_client, bucket: str, prefix: str) -> set[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _stages(run_id: str) -> dict[str, tuple[str, bool]]:
    from keel.core.workspace import open_store

    with Session(open_store()) as s:
        return {r.name: (r.status, r.cached) for r in s.exec(select(StageRun).where(StageRun.run_id == run_id))}


def _result_blocks() -> dict[str, dict]:
    """The RemoteFileSystem blocks saved on the Prefect API, by base path, with everything they hold."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        docs = client.read_block_documents(include_secrets=True)
    return {d.data["basepath"]: d.data for d in docs if "basepath" in d.data and "://" in str(d.data["basepath"])}


def _local_results() -> set[str]:
    folder = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    return {p.name for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def test_artifacts_and_task_results_live_in_the_bucket_and_a_rerun_replays_from_it(
        on_s3, s3_bucket, s3_client, keel_home, demo_slices, demo_config):
    local_before = _local_results()  # other tests of the session cached the same keys locally
    first = [_run(b, demo_config) for b in demo_slices[:2]]
    assert [s["status"] for s in first] == ["completed", "completed"] and first[0]["decision"] == "promoted"

    from keel.core.workspace import open_store

    with Session(open_store()) as s:
        datasets = {d.artifact_uri for d in s.exec(select(DatasetVersion))}
        models = {m.artifact_uri for m in s.exec(select(ModelVersion))}
    stored = _keys(s3_client, s3_bucket, "keel/")
    results = _keys(s3_client, s3_bucket, "keel/prefect-results/")
    artifacts = stored - results
    # the two batches, the training set and holdout, the model: full URLs in the store, objects in the bucket
    assert len(datasets) >= 4 and len(models) >= 1
    assert datasets | models == {f"s3://{s3_bucket}/{key}" for key in artifacts}
    assert not (keel_home / "artifacts").exists(), "nothing is written to the local artifact folder"
    ran = [name for s in first for name, (status, cached) in _stages(s["run_id"]).items()
           if name in HEAVY and status == "completed" and not cached]
    assert len(results) >= len(ran) > 0, "every task that ran keeps its result (and cache record) in the bucket"
    assert not {Path(k).name for k in results} & (_local_results() - local_before), \
        "no task result went to the local storage"
    saved = _result_blocks()
    assert f"{on_s3}/prefect-results" in saved, saved
    assert "keel-test-secret" not in json.dumps(saved), "credentials never reach Prefect's database"

    again = [_run(b, demo_config) for b in demo_slices[:2]]
    assert [a["replay_of"] for a in again] == [f["run_id"] for f in first]
    for summary in again:
        heavy = {n: v for n, v in _stages(summary["run_id"]).items() if n in HEAVY and v[0] == "completed"}
        assert heavy and all(cached for _, cached in heavy.values()), heavy
    assert _keys(s3_client, s3_bucket, "keel/prefect-results/") == results, "a rerun reads results, writes none"

    from keel.cli.main import cli

    shown = CliRunner().invoke(cli, ["lineage", "flights-delay", "1", "--config", str(demo_config)])
    assert shown.exit_code == 0 and f"artifact at s3://{s3_bucket}/keel/" in shown.output, shown.output

    # a model object changed in the bucket: promoting it by hand and the next run that loads it both fail
    model_key = f"keel/{min(models).split('/keel/', 1)[1]}"
    s3_client.put_object(Bucket=s3_bucket, Key=model_key, Body=b"tree\nnot the model that was trained\n")
    result = CliRunner().invoke(cli, ["promote", "flights-delay", "1", "--reason", "try the tampered one",
                                      "--config", str(demo_config)])
    assert result.exit_code == 1 and "does not match its SHA-256" in result.output, result.output
    from keel.core.errors import ChecksumMismatch

    with pytest.raises(ChecksumMismatch, match="does not match its SHA-256"):
        _run(demo_slices[2], demo_config)


def test_a_second_machine_with_a_fresh_home_replays_from_the_shared_bucket(
        on_s3, s3_bucket, s3_client, keel_home, demo_slices, demo_config, tmp_path):
    from prefect.settings import PREFECT_API_URL

    first = [_run(b, demo_config) for b in demo_slices[:2]]
    stored = _keys(s3_client, s3_bucket, "keel/")

    # another machine: its own KEEL_HOME and Prefect home (empty local result storage), the same store and bucket
    other = tmp_path / "other-machine"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH")}
    env.update({"KEEL_HOME": str(other / ".keel"), "KEEL_DATABASE_URL": Settings(home=keel_home).db_url,
                "PREFECT_API_URL": str(PREFECT_API_URL.value())})
    code = ("import json, sys\nfrom keel.flows.run_pipeline import run_pipeline\n"
            "print(json.dumps([run_pipeline(batch=b, config=sys.argv[1])['run_id'] for b in sys.argv[2:]]))")
    out = subprocess.run([sys.executable, "-c", code, str(demo_config), *map(str, demo_slices[:2])], env=env,
                         capture_output=True, text=True, timeout=600, cwd=other.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    run_ids = json.loads(out.stdout.strip().splitlines()[-1])

    for run_id, earlier in zip(run_ids, first, strict=True):
        stages = _stages(run_id)
        heavy = {n: v for n, v in stages.items() if n in HEAVY and v[0] == "completed"}
        assert heavy and all(cached for _, cached in heavy.values()), stages
        assert {n for n, v in _stages(earlier["run_id"]).items() if v[0] == "completed"} == \
            {n for n, v in stages.items() if v[0] == "completed"}
    assert not (other / ".keel" / "artifacts").exists()
    storage = other / ".keel" / "prefect" / "storage"
    results = {Path(k).name for k in _keys(s3_client, s3_bucket, "keel/prefect-results/")}
    assert not {p.name for p in storage.rglob("*") if p.is_file()} & results if storage.exists() else True
    assert _keys(s3_client, s3_bucket, "keel/") == stored, "the second machine found everything it needed"
