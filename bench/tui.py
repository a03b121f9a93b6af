"""Benchmark of `keel tui` on a large store: start-up to a painted runs screen, open a run, switch views, filter.

Builds (bulk inserts) a store of 100,000 runs, 10,000 model versions and 1,000,000 metric points in a
temporary KEEL_HOME, then starts the TUI in fresh processes (so imports count) and reports the median
of several runs. The peer is keel's own CLI listing the same first page (`keel runs --limit 100`).

    python bench/tui.py [--runs 100000] [--versions 10000] [--points 1000000] [--repeat 5] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.0

CHILD = r"""
import asyncio, json, os, sys, time
spawned = float(os.environ["BENCH_SPAWNED"])
from keel.tui.app import KeelApp

async def main():
    app = KeelApp(None, refresh=0)
    out = {}
    async with app.run_test(size=(80, 24)) as pilot:
        async def until(cond):
            while not cond():
                await pilot.pause(0.005)
            await pilot.pause()
        await until(lambda: getattr(app.screen, "loaded", False))
        out["startup"] = time.time() - spawned
        out["imported"] = sorted(m for m in ("lightgbm", "alibi_detect", "prefect") if m in sys.modules)
        t = time.perf_counter()
        await pilot.press("enter")
        await until(lambda: getattr(app.screen, "detail", None) is not None)
        out["open_run"] = time.perf_counter() - t
        await pilot.press("escape")
        for key, name in (("2", "models"), ("4", "reviews"), ("3", "compare"), ("1", "runs")):
            t = time.perf_counter()
            await pilot.press(key)
            await until(lambda: getattr(app.screen, "loaded", False) and not any(w.is_running for w in app.screen.workers))
            out[f"view_{name}"] = time.perf_counter() - t
        t = time.perf_counter()
        screen = app.screen
        await pilot.press("slash", *"batch-0999", "enter")
        await until(lambda: screen.filter_text and not any(w.is_running for w in screen.workers))
        out["filter"] = time.perf_counter() - t
        out["filter_rows"] = screen.page["total"]
    print("BENCH " + json.dumps(out))

asyncio.run(main())
"""


def build(home: Path, runs: int, versions: int, points: int) -> None:
    """Bulk-insert the large store (the bench writes rows directly; the TUI only reads them)."""
    os.environ["KEEL_HOME"] = str(home)
    from sqlalchemy import insert

    from keel.core.store.models import Alias, DatasetVersion, MetricPoint, ModelVersion, PipelineRun, Review
    from keel.core.workspace import open_store

    engine = open_store()
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    n_sets = 1000
    with engine.begin() as conn:
        conn.execute(insert(DatasetVersion), [
            {"id": f"{i:064x}", "kind": "batch", "source": f"/data/batch-{i:06d}.parquet", "format": "parquet",
             "rows": 10_000, "labelled_rows": 10_000, "artifact_uri": f"/nowhere/{i}", "created_at": t0}
            for i in range(n_sets)])
    start = time.perf_counter()
    chunk = 20_000
    models = [f"model-{m:02d}" for m in range(10)]
    for lo in range(0, runs, chunk):
        rows = []
        for i in range(lo, min(runs, lo + chunk)):
            rows.append({
                "id": f"{i:08d}-0000-4000-8000-000000000000", "flow_run_id": None, "flow": "run_pipeline",
                "model_name": models[i % 10], "batch_id": f"{i % n_sets:064x}", "source": f"/data/batch-{i:06d}.parquet",
                "status": "quarantined" if i % 97 == 0 else "completed",
                "decision": ("promoted", "kept", "kept", "review", "rejected")[i % 5],
                "reasons": ["bench"], "summary": {"drift": {"drifted": ["x"] * (i % 4)},
                                                 "metrics": {"roc_auc": 0.7 + (i % 100) / 1000}},
                "started_at": t0 + timedelta(minutes=i), "finished_at": t0 + timedelta(minutes=i, seconds=30)})
        with engine.begin() as conn:
            conn.execute(insert(PipelineRun), rows)
    with engine.begin() as conn:
        conn.execute(insert(ModelVersion), [
            {"model_name": models[v % 10], "version": v // 10 + 1,
             "status": "archived", "train_dataset_id": f"{v % n_sets:064x}",
             "holdout_dataset_id": f"{(v + 1) % n_sets:064x}", "params_hash": f"{v:064x}", "code_hash": "c" * 64,
             "artifact_sha256": f"{v:064x}", "artifact_uri": f"/nowhere/{v}.txt",
             "run_id": f"{v * 10:08d}-0000-4000-8000-000000000000", "train_metrics": {"roc_auc": 0.75},
             "created_at": t0 + timedelta(minutes=v * 10)} for v in range(versions)])
        ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM model_version ORDER BY id").fetchall()]
        conn.execute(insert(Alias), [{"model_name": m, "alias": "production", "model_version_id": ids[-10 + k],
                                      "previous_version_id": ids[-20 + k], "revision": 2, "updated_at": t0}
                                     for k, m in enumerate(models)])
        conn.execute(insert(Review), [{"model_name": models[k], "candidate_version_id": ids[-30 + k],
                                       "production_version_id": ids[-10 + k], "status": "open", "reasons": ["bench"],
                                       "comparison": None, "required_approvals": 1, "created_at": t0}
                                      for k in range(10)])
    names = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier", "n", "positives", "churn")
    for lo in range(0, points, 50_000):
        rows = []
        for p in range(lo, min(points, lo + 50_000)):
            v, n = divmod(p, len(names))
            rows.append({"model_name": models[(v % versions) % 10], "model_version_id": ids[v % versions],
                         "dataset_id": f"d{v // versions}", "run_id": None, "scope": "batch", "name": names[n],
                         "value": 0.7, "lower": None, "upper": None, "alert": False, "at": t0})
        with engine.begin() as conn:
            conn.execute(insert(MetricPoint), rows)
    print(f"built {runs:,} runs, {versions:,} versions, {points:,} metric points in {time.perf_counter() - start:.1f} s")


def child_run(home: Path) -> dict:
    env = {**os.environ, "KEEL_HOME": str(home), "PYTHONPATH": str(ROOT), "TEXTUAL_ANIMATIONS": "none",
           "BENCH_SPAWNED": repr(time.time())}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"the TUI run failed:\n{out.stderr[-2000:]}")
    return json.loads(line[6:])


def cli_run(home: Path) -> float:
    env = {**os.environ, "KEEL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "keel", "runs", "--limit", "100"], env=env, capture_output=True,
                   check=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--home", type=Path, help="reuse (or build into) this KEEL_HOME")
    args = ap.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="keel-bench-tui-")) / ".keel"
    if not (home / "keel.db").exists():
        build(home, args.runs, args.versions, args.points)
    results = [child_run(home) for _ in range(args.repeat)]
    cli = [cli_run(home) for _ in range(args.repeat)]
    keys = ["startup", "open_run", "view_models", "view_reviews", "view_compare", "view_runs", "filter"]
    print(f"\nkeel tui on {args.runs:,} runs / {args.versions:,} versions / {args.points:,} metric points "
          f"(median of {args.repeat}, 80x24, headless, {os.cpu_count()} cores)")
    print(f"{'measure':<34}{'median':>10}{'min':>10}{'max':>10}")
    for key in keys:
        vals = [r[key] for r in results]
        print(f"{key:<34}{statistics.median(vals) * 1000:>8.0f}ms{min(vals) * 1000:>8.0f}ms{max(vals) * 1000:>8.0f}ms")
    print(f"{'peer: keel runs --limit 100 (CLI)':<34}{statistics.median(cli) * 1000:>8.0f}ms"
          f"{min(cli) * 1000:>8.0f}ms{max(cli) * 1000:>8.0f}ms")
    print(f"goal: start-up under {GOAL_S:.0f} s -> {'met' if statistics.median(r['startup'] for r in results) < GOAL_S else 'NOT met'}; "
          f"heavy imports at start-up: {results[0]['imported'] or 'none'}; filter matched {results[0]['filter_rows']} runs")


if __name__ == "__main__":
    main()
