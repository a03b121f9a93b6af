"""A cached stage never returns an answer computed under other settings or other code.

One baseline configuration runs two generated batches; then each variant changes one setting that a
cached stage reads, runs the same batches in a fresh home (task results are shared: they are keyed by
content hashes, settings and code, never by where the store is), and the stage that reads the setting
is not a cache hit and its result changes. The baseline again, or a change to a setting no cached stage
reads, gives nothing but hits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sqlmodel import Session, select

from keel.core.config import Settings
from keel.core.store.models import ModelVersion, StageRun
from keel.core.workspace import Workspace

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("validate", "score", "drift", "monitor", "train", "evaluate")
BASELINE = """\
model = "m"
target = "y"
id = "id"
timestamp = "ts"
{top}
[contract]
ranges = {{ x1 = [-2.5, 2.5] }}
{contract}
[retrain]
every = 1
cooldown = 0
num_boost_round = 30
{retrain}
[gate]
n_boot = 100
{gate}
[monitor]
{monitor}
[drift]
{drift}
[alerts]
{alerts}
"""


def _batch(seed: int, shift: float, null_share: float, n: int = 2000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(shift, 1, n), rng.normal(0, 1, n)
    code, cat = rng.integers(0, 5, n), rng.choice(["a", "b", "c"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.2 * x1 + 0.5 * x2 + (cat == "a") - 0.3 * code)))).astype(int)
    start = datetime(2024, 1, 1) + timedelta(days=30 * seed)
    return pl.DataFrame({
        "id": [f"r{seed}-{i}" for i in range(n)], "ts": [start + timedelta(minutes=i) for i in range(n)],
        "x1": x1, "x2": np.where(rng.random(n) < null_share, np.nan, x2), "code": code, "cat": cat,
        "leak": y + rng.normal(0, 0.3, n), "y": y,
    }).with_columns(pl.col("x2").fill_nan(None))


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cache-batches")
    paths = []
    for seed, shift, nulls in ((1, 0.0, 0.05), (2, 0.6, 0.20)):  # the second drifts and has more nulls in x2
        path = folder / f"batch-{seed}.parquet"
        _batch(seed, shift, nulls).write_parquet(path)
        paths.append(path)
    return paths


def _config(folder: Path, **sections: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = BASELINE.format(**{k: sections.get(k, "") for k in
                              ("top", "contract", "retrain", "gate", "monitor", "drift", "alerts")})
    path = folder / "keel.toml"
    path.write_text(text)
    return path


def _run_all(folder: Path, batches: list[Path], config: Path) -> list[dict[str, Any]]:
    """Both batches through the pipeline in a fresh home; each run's summary with its stages and model."""
    from keel.flows.run_pipeline import run_pipeline

    home = folder / "home"
    out = []
    for batch in batches:
        summary = run_pipeline(batch=str(batch), config=str(config), home=str(home))
        out.append(summary)
    ws = Workspace.open(config, Settings(home=home))
    with Session(ws.engine) as session:
        for summary in out:
            rows = session.exec(select(StageRun).where(StageRun.run_id == summary["run_id"])).all()
            summary["stages"] = {r.name: (r.status, r.cached) for r in rows}
            mv = session.exec(select(ModelVersion).where(ModelVersion.version == summary["model_version"])).first()
            summary["model"] = {"features": mv.features, "categorical": mv.categorical,
                                "sha256": mv.artifact_sha256} if mv else None
    return out


@pytest.fixture(scope="module")
def baseline(batches: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("baseline")
    runs = _run_all(folder, batches, _config(folder))
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert runs[1]["drift"]["drifted"] and runs[1]["metrics"], "the second batch is scored, drifts and is labelled"
    assert runs[1]["model_version"] == 2, "the second batch retrains (every = 1)"
    return runs


def _ran(run: dict[str, Any], stage: str) -> bool:
    return run["stages"].get(stage, ("missing", False))[0] == "completed"


def _hit(run: dict[str, Any], stage: str) -> bool:
    status, cached = run["stages"][stage]
    return status == "completed" and cached


def test_the_same_settings_in_a_fresh_home_are_all_cache_hits(baseline, batches, tmp_path):
    again = _run_all(tmp_path, batches, _config(tmp_path))
    for run in again:
        ran = [s for s in TASKS if _ran(run, s)]
        assert ran and all(_hit(run, s) for s in ran), run["stages"]
    assert [r["model"]["sha256"] for r in again] == [r["model"]["sha256"] for r in baseline]


def test_settings_no_cached_stage_reads_leave_every_stage_a_hit(baseline, batches, tmp_path):
    config = _config(tmp_path, alerts="cooldown = 3\npersist_n = 2\ndrift_threshold = 0.1\nprediction_effect = 0.01\n"
                                       "on_feature_drift = true\non_prediction_drift = false")
    for run in _run_all(tmp_path, batches, config):
        assert all(_hit(run, s) for s in TASKS if _ran(run, s)), run["stages"]


def _drifted(run: dict[str, Any]) -> Any:
    return run["drift"] and run["drift"]["drifted"]


def _feature(run: dict[str, Any], key: str) -> Any:
    return [f.get(key) for f in run["drift"]["features"]] if run["drift"] else None


# (setting, the keel.toml change, the batch whose stage reads it, the stage, what the stage's result shows)
VARIANTS = [
    ("contract.max_bad_share", {"contract": "max_bad_share = 0.02"}, 1, "validate", lambda r: r["status"]),
    ("contract.ranges", {"contract": ""}, 0, "validate", lambda r: r["quarantined_rows"]),
    ("contract.categories", {"contract": 'categories = { cat = ["a", "b"] }'}, 0, "validate", lambda r: r["status"]),
    ("contract.max_null_increase", {"contract": "max_null_increase = 0.1"}, 1, "validate", lambda r: r["status"]),
    ("monitor.threshold", {"monitor": "threshold = 0.3"}, 1, "monitor",
     lambda r: (r["metrics"]["accuracy"], r["metrics"]["recall"])),
    ("exclude", {"top": 'exclude = ["leak"]'}, 0, "train", lambda r: r["model"]["features"]),
    ("categorical", {"top": 'categorical = ["cat", "code"]'}, 0, "train", lambda r: r["model"]["categorical"]),
    ("retrain.params", {"retrain": "params = { num_leaves = 4 }"}, 0, "train", lambda r: r["model"]["sha256"]),
    ("retrain.num_boost_round", {"retrain": ""}, 0, "train", lambda r: r["model"]["sha256"]),
    ("retrain.holdout", {"retrain": 'holdout = "random"'}, 0, "train", lambda r: r["model"]["sha256"]),
    ("drift.wasserstein_threshold", {"drift": "wasserstein_threshold = 5.0"}, 1, "drift", _drifted),
    ("drift.numeric_test", {"drift": 'numeric_test = "cvm"'}, 1, "drift", lambda r: _feature(r, "statistic")),
    ("drift.correction", {"drift": 'correction = "fdr"'}, 1, "drift", lambda r: _feature(r, "p_corrected")),
    ("drift.p_value", {"drift": "p_value = 1e-300"}, 1, "drift", _drifted),
    ("drift.sample_size", {"drift": "sample_size = 500"}, 1, "drift", lambda r: r["drift"]["sampled"]),
    ("gate.alpha", {"gate": "alpha = 0.2"}, 1, "evaluate", lambda r: r["evaluation"]["alpha"]),
    ("gate.n_boot", {"gate": ""}, 1, "evaluate", lambda r: json.dumps(r["evaluation"]["metrics"], sort_keys=True)),
    ("gate.auto_promote", {"gate": "auto_promote = false"}, 0, "gate", lambda r: r["decision"]),
    ("gate.minimums", {"gate": "minimums = { roc_auc = 0.999 }"}, 0, "gate", lambda r: r["decision"]),
]


def _variant_config(folder: Path, name: str, change: dict[str, str]) -> Path:
    sections = dict(change)
    if name == "contract.ranges":  # the baseline's range, narrowed
        text = _config(folder).read_text().replace("x1 = [-2.5, 2.5]", "x1 = [-1.5, 1.5]")
        (folder / "keel.toml").write_text(text)
        return folder / "keel.toml"
    if name == "retrain.num_boost_round":
        text = _config(folder).read_text().replace("num_boost_round = 30", "num_boost_round = 12")
        (folder / "keel.toml").write_text(text)
        return folder / "keel.toml"
    if name == "gate.n_boot":
        text = _config(folder).read_text().replace("n_boot = 100", "n_boot = 60")
        (folder / "keel.toml").write_text(text)
        return folder / "keel.toml"
    return _config(folder, **sections)


@pytest.mark.parametrize(("name", "change", "index", "stage", "result"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_a_changed_setting_reruns_the_stage_that_reads_it(baseline, batches, tmp_path, name, change, index, stage,
                                                          result):
    runs = _run_all(tmp_path, batches, _variant_config(tmp_path, name, change))
    run, base = runs[index], baseline[index]
    assert _ran(run, stage), f"{stage} did not run on batch {index + 1}: {run['stages']}"
    if stage in TASKS:
        assert not _hit(run, stage), f"{name} changed but {stage} was a cache hit"
    assert result(run) != result(base), f"{name} changed but {stage} gave the same result"
    upstream = {"validate": (), "score": ("validate",), "drift": ("validate", "score"),
                "monitor": ("validate", "score", "drift"), "train": (), "evaluate": ("train",), "gate": ("train",)}
    for earlier in upstream[stage]:
        if _ran(run, earlier) and stage != "gate":
            assert _hit(run, earlier), f"{name} does not concern {earlier}, yet it missed the cache"
    if name == "monitor.threshold":  # evaluate reads the threshold too: the candidate's metrics at it
        assert not _hit(runs[0], "evaluate") and _hit(runs[0], "train")
        assert runs[0]["candidate_metrics"]["accuracy"] != baseline[0]["candidate_metrics"]["accuracy"]


def _snapshot_source(dest: Path) -> Path:
    """keel laid out as installed (keel.core is core/, ...), for a run whose core source the test edits."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "keel", dest / "keel", ignore=ignore)
    for package in ("core", "flows", "tui", "cli"):
        shutil.copytree(ROOT / package, dest / "keel" / package, ignore=ignore)
    return dest


def test_a_change_to_keel_core_source_misses_the_cache(batches, tmp_path):
    from prefect.settings import PREFECT_API_URL

    src = _snapshot_source(tmp_path / "src")
    config = _config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(src), "KEEL_HOME": str(tmp_path / "home"),
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    code = ("import json, sys\nfrom keel.flows.run_pipeline import run_pipeline\n"
            "import keel.core\nassert keel.core.__file__.startswith(sys.argv[3]), keel.core.__file__\n"
            "print(json.dumps(run_pipeline(batch=sys.argv[1], config=sys.argv[2])['run_id']))")

    def run() -> dict[str, tuple[str, bool]]:
        out = subprocess.run([sys.executable, "-c", code, str(batches[0]), str(config), str(src)], env=env,
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        run_id = json.loads(out.stdout.strip().splitlines()[-1])
        ws = Workspace.open(config, Settings(home=tmp_path / "home"))
        with Session(ws.engine) as session:
            return {r.name: (r.status, r.cached) for r in
                    session.exec(select(StageRun).where(StageRun.run_id == run_id)).all()}

    run()
    replay = run()
    assert all(replay[s] == ("completed", True) for s in ("validate", "train", "evaluate")), replay
    evaluate_py = src / "keel" / "core" / "model" / "evaluate.py"
    evaluate_py.write_text(evaluate_py.read_text().replace(
        '"""', '"""A fix in keel.core: the code that computes results changed.\n\n', 1))
    after_fix = run()
    assert all(after_fix[s] == ("completed", False) for s in ("validate", "train", "evaluate")), after_fix
