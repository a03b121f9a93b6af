"""Registry bookkeeping of one pipeline run, keel vs MLflow on its own SQLite store, side by side.

One run = register a dataset version (with lineage), register a model version, log its metrics,
switch the production alias with its audit event. The MLflow half runs in a separate interpreter
(env MLFLOW_PYTHON, default /tmp/mlflowvenv/bin/python) so keel's environment stays free of mlflow.
Usage: python bench/registry.py [--runs 50] [--metrics 20] [--points 200000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLFLOW_SIDE = r'''
import json, sys, tempfile, time, logging, warnings
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
runs, n_metrics, points = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
root = tempfile.mkdtemp()
uri = f"sqlite:///{root}/mlflow.db"
mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
client = MlflowClient(uri, uri)
exp = client.create_experiment("bench", artifact_location=f"{root}/artifacts")
client.create_registered_model("churn")
def one(i):
    run = client.create_run(exp)
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    client.log_batch(rid, params=[Param("dataset_sha256", f"{i:064x}"), Param("train_sha256", f"{i + 10**6:064x}"),
                                  Param("params_hash", "p" * 16), Param("code_hash", "c" * 16)],
                     metrics=[Metric(f"holdout_m{k}", 0.5 + k / 1000, ts, 0) for k in range(n_metrics)])
    mv = client.create_model_version("churn", f"{root}/artifacts/model-{i}.txt", run_id=rid)
    client.set_registered_model_alias("churn", "production", mv.version)
    client.set_terminated(rid)
for i in range(3):
    one(10**6 + i)
start, cpu = time.perf_counter(), time.process_time()
for i in range(runs):
    one(i)
per_run = (time.perf_counter() - start) * 1000 / runs
per_run_cpu = (time.process_time() - cpu) * 1000 / runs
run = client.create_run(exp)
ts = int(time.time() * 1000)
start, cpu = time.perf_counter(), time.process_time()
for b in range(0, points, 1000):  # log_batch takes at most 1000 metrics per call
    client.log_batch(run.info.run_id, metrics=[Metric("loss", float(j), ts, j) for j in range(b, min(b + 1000, points))])
pps = points / (time.perf_counter() - start)
pps_cpu = points / (time.process_time() - cpu)
print(json.dumps({"version": mlflow.__version__, "per_run_ms": per_run, "points_per_s": pps,
                  "per_run_cpu_ms": per_run_cpu, "points_per_cpu_s": pps_cpu}))
'''


def keel_side(runs: int, n_metrics: int, points: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    os.environ["KEEL_HOME"] = str(home)
    (home / "keel.toml").write_text('model = "churn"\ntarget = "y"\n')
    import lightgbm as lgb
    import numpy as np

    from keel.core.registry import transactions as registry
    from keel.core.store import records
    from keel.core.store.models import utcnow
    from keel.core.workspace import Workspace

    ws = Workspace.open(home / "keel.toml")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    text = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x, (x[:, 0] > 0).astype(int)), 3).model_to_string()
    sha, dest = ws.artifacts.put_bytes(text.encode(), ".txt")

    def one(i: int) -> None:
        batch, train = hashlib.sha256(f"b{i}".encode()).hexdigest(), hashlib.sha256(f"t{i}".encode()).hexdigest()
        records.register_dataset(ws, {"id": batch, "kind": "batch", "source": f"batch-{i}.parquet", "format": "parquet",
                                      "rows": 1000, "labelled_rows": 1000, "columns": ["x", "y"], "artifact_uri": "-"})
        records.register_dataset(ws, {"id": train, "kind": "train", "source": None, "format": "parquet", "rows": 700,
                                      "labelled_rows": 700, "columns": ["x", "y"], "artifact_uri": "-"}, parents=[batch])
        mv = records.register_model(ws, {"model_name": "churn", "train_dataset_id": train, "params_hash": "p" * 16,
                                         "code_hash": "c" * 16, "artifact_sha256": sha, "artifact_uri": str(dest)})
        records.record_metrics(ws, mv.id or 0, train, "holdout", {f"m{k}": 0.5 + k / 1000 for k in range(n_metrics)}, None)
        registry.promote(ws, "churn", mv.version, "bench", actor="bench", action="promote:auto", authorise=False)

    for i in range(3):
        one(10**6 + i)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(runs):
        one(i)
    per_run = (time.perf_counter() - start) * 1000 / runs
    per_run_cpu = (time.process_time() - cpu) * 1000 / runs
    now = utcnow()
    rows = [{"model_name": "churn", "model_version_id": 1, "dataset_id": "bulk", "run_id": None, "scope": "batch",
             "name": f"loss{j}", "value": float(j), "lower": None, "upper": None, "alert": False, "at": now}
            for j in range(points)]
    start, cpu = time.perf_counter(), time.process_time()
    records.log_metric_points(ws, rows)  # keel's bulk path, as the pipeline and `keel labels` use it
    pps = points / (time.perf_counter() - start)
    pps_cpu = points / (time.process_time() - cpu)
    from keel.core.registry import audit
    assert audit.verify(ws.engine).ok
    return {"per_run_ms": per_run, "points_per_s": pps, "per_run_cpu_ms": per_run_cpu, "points_per_cpu_s": pps_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="keel and MLflow alternate; medians are reported")
    args = parser.parse_args()
    python = os.environ.get("MLFLOW_PYTHON", "/tmp/mlflowvenv/bin/python")
    keel_runs, mlflow_runs = [], []
    for _ in range(args.rounds):  # interleaved, so both sides see the same machine load
        keel_runs.append(keel_side(args.runs, args.metrics, args.points))
        proc = subprocess.run([python, "-c", MLFLOW_SIDE, str(args.runs), str(args.metrics), str(args.points)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"MLflow half failed ({python}): {proc.stderr.strip().splitlines()[-1:]}")
        mlflow_runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = statistics.median
    keys = ("per_run_ms", "points_per_s", "per_run_cpu_ms", "points_per_cpu_s")
    keel = {k: med(r[k] for r in keel_runs) for k in keys}
    mlflow = {k: med(r[k] for r in mlflow_runs) for k in keys}
    ratios = sorted(k["per_run_ms"] / m["per_run_ms"] for k, m in zip(keel_runs, mlflow_runs, strict=True))
    print(f"{'median of ' + str(args.rounds):24}{'keel':>12}{'MLflow ' + mlflow_runs[0]['version']:>16}{'keel/MLflow':>14}")
    print(f"{'ms per run':24}{keel['per_run_ms']:>12.2f}{mlflow['per_run_ms']:>16.2f}"
          f"{keel['per_run_ms'] / mlflow['per_run_ms']:>14.2f}")
    print(f"{'metric points / s':24}{keel['points_per_s']:>12,.0f}{mlflow['points_per_s']:>16,.0f}"
          f"{keel['points_per_s'] / mlflow['points_per_s']:>14.1f}")
    print(f"{'CPU ms per run':24}{keel['per_run_cpu_ms']:>12.2f}{mlflow['per_run_cpu_ms']:>16.2f}"
          f"{keel['per_run_cpu_ms'] / mlflow['per_run_cpu_ms']:>14.2f}")
    print(f"{'points / CPU second':24}{keel['points_per_cpu_s']:>12,.0f}{mlflow['points_per_cpu_s']:>16,.0f}"
          f"{keel['points_per_cpu_s'] / mlflow['points_per_cpu_s']:>14.1f}")
    print(f"per-round time ratios (keel/MLflow): {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"({args.runs} runs of {args.metrics} metrics each after 3 warm-up runs; {args.points:,} bulk points)")


if __name__ == "__main__":
    main()
