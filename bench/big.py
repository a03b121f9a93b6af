"""Benchmark: one big batch (1M, 3M, 10M rows) end to end through `keel run`, beside a bare floor script.

For each size, in one invocation (so both sides see the same machine load):

1. generate, seeded, a flights-like batch of that many rows (`generate`: rows drawn from the demo's 2013 New York
   flights joined to the weather, the weather perturbed, every row a new unique id) and a first labelled batch of
   100,000 rows from January;
2. keel: a fresh KEEL_HOME with the demo's keel.toml (retraining on every batch: `every = 1`, `cooldown = 0`),
   `keel run first.parquet` (untimed: it gives the production model), then `keel run big.parquet --json`, timed:
   ingest, validate, score (predictions stored), drift, monitor, decide, train (window = the first batch and the
   big one), evaluate against production, gate;
3. the floor, a bare script in its own process: read the big file with polars, LightGBM predict with the
   production model on every row, train with the same parameters and rounds on the same window (the first batch
   plus the big batch minus a 30% holdout), predict the holdout with both models. No contract, drift, store,
   Prefect.

Each side runs under a wrapper that reports wall time and the peak memory two ways: the largest single process
(`ru_maxrss` of RUSAGE_CHILDREN) and the whole process tree (the sum of RSS over the wrapper's descendants,
polled from /proc every 0.2 s; keel's tree includes Prefect's temporary server), and keel's time per stage from
the run's stage rows. Files go to a temporary folder (or --dir) that is deleted at the end.

Run:  PYTHONPATH=. .venv/bin/python bench/big.py [--sizes 1000000,3000000,10000000] [--dir DIR] [--json FILE]
See bench/README.md, "## Big batches".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIRST_ROWS = 100_000
CONFIG_TAIL = """
[retrain]
window = 2
every = 1
cooldown = 0
num_boost_round = 50
"""


# --- data -----------------------------------------------------------------------------------------------


def generate(path: Path, rows: int, seed: int, month: int | None = None) -> Path:
    """A seeded flights-like batch of `rows` rows: demo rows drawn with replacement (from `month` only when given),
    numeric weather perturbed, and a unique `flight_id` per row (`<seed>-<row>`)."""
    import numpy as np
    import polars as pl

    from keel.core.data.demo import WEATHER, load_flights

    template = load_flights()
    if month is not None:
        template = template.filter(pl.col("month") == month)
    rng = np.random.default_rng(seed)
    frame = template[rng.integers(0, template.height, rows)]
    noise = {c: pl.col(c) + pl.Series(rng.normal(0, 0.5, rows)).round(1)
             for c in WEATHER if c not in ("wind_dir", "precip", "visib")}
    frame = frame.with_columns(
        **noise, flight_id=pl.format("{}-{}", pl.lit(seed), pl.int_range(rows, dtype=pl.Int64)),
    ).with_columns(pl.col("humid").clip(0, 100), pl.col("wind_speed").clip(0, None))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=False)
    tmp.replace(path)
    return path


# --- measuring a subprocess -------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_tree(root: int) -> int:
    """Bytes resident in `root` and all its descendants now."""
    tree, total, todo = _children(), 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(tree.get(pid, []))
    return total


WRAPPER = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    start = time.perf_counter()
    proc = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(sys.argv[1], "w") as out:
        json.dump({"rc": proc.returncode, "wall": wall, "maxrss": usage.ru_maxrss * 1024,
                   "cpu": usage.ru_utime + usage.ru_stime, "stdout": proc.stdout, "stderr": proc.stderr[-4000:]}, out)
""")


def measured(cmd: list[str], env: dict[str, str], cwd: Path, report: Path) -> dict[str, Any]:
    """Run `cmd` under the wrapper: wall time, CPU seconds, largest process's max RSS, process tree's peak RSS."""
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(report), *cmd], env=env, cwd=cwd)
    peak, done = 0, threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_tree(proc.pid))
            done.wait(0.2)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    proc.wait()
    done.set()
    watcher.join()
    result = json.loads(report.read_text())
    result["tree_peak"] = peak
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({result['rc']}): {result['stderr'].strip()[-2000:]}")
    return result


# --- the two sides ----------------------------------------------------------------------------------------


def keel_config(folder: Path) -> Path:
    from keel.core.data.demo import DEMO_CONFIG

    text = DEMO_CONFIG.split("[retrain]")[0] + CONFIG_TAIL + "\n[gate]" + DEMO_CONFIG.split("[gate]")[1]
    path = folder / "keel.toml"
    path.write_text(text)
    return path


def run_keel(work: Path, first: Path, big: Path) -> tuple[dict[str, Any], Path]:
    home = work / "keel-home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "KEEL_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("KEEL_DATABASE_URL", None)
    env.pop("KEEL_ARTIFACTS_URL", None)
    keel = [str(Path(sys.executable).with_name("keel"))]
    config = keel_config(work)
    measured([*keel, "run", str(first), "--config", str(config), "--json"], env, work, work / "first.json")
    result = measured([*keel, "run", str(big), "--config", str(config), "--json"], env, work, work / "keel.json")
    result["summary"] = json.loads(result.pop("stdout"))
    return result, home


FLOOR = textwrap.dedent('''
    """The floor: read the batch with polars, LightGBM predict with production, train on the same window, predict
    the holdout with both. Arguments: first batch, big batch, production model text file, JSON of the settings."""
    import json, sys
    import numpy as np, polars as pl, lightgbm as lgb

    first_path, big_path, model_path, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    features, categories, params = settings["features"], settings["categories"], settings["params"]

    def matrix(frame, cats):
        exprs = []
        for c in features:
            if c in cats:
                exprs.append(pl.col(c).cast(pl.String).replace_strict(cats[c], list(map(float, range(len(cats[c])))),
                             default=None, return_dtype=pl.Float64))
            else:
                exprs.append(pl.col(c).cast(pl.Float64))
        return frame.select(exprs).to_numpy()

    big = pl.read_parquet(big_path)
    production = lgb.Booster(model_str=open(model_path).read())
    scores = production.predict(matrix(big, categories), num_threads=1)
    first = pl.read_parquet(first_path)
    labelled = [f.filter(pl.col("delayed").is_not_null()) for f in (first, big)]
    newest = labelled[-1]
    is_holdout = np.random.default_rng(settings["seed"]).random(newest.height) < settings["holdout_share"]
    holdout = newest.filter(pl.Series(is_holdout))
    train = pl.concat([labelled[0], newest.filter(pl.Series(~is_holdout))], how="diagonal_relaxed")
    cats = {c: sorted(str(v) for v in train[c].drop_nulls().unique().to_list()) for c in settings["categorical"]}
    data = lgb.Dataset(matrix(train, cats), label=train["delayed"].to_numpy().astype(float), feature_name=features,
                       categorical_feature=[features.index(c) for c in settings["categorical"]])
    candidate = lgb.train(params, data, num_boost_round=settings["rounds"])
    cand_p = candidate.predict(matrix(holdout, cats), num_threads=1)
    prod_p = production.predict(matrix(holdout, categories), num_threads=1)
    print(json.dumps({"scored": len(scores), "trained_on": train.height, "holdout": holdout.height,
                      "mean_score": float(np.mean(scores)), "auc_gap": float(np.mean(cand_p) - np.mean(prod_p))}))
''')


def run_floor(work: Path, first: Path, big: Path, home: Path) -> dict[str, Any]:
    import sqlite3

    with sqlite3.connect(home / "keel.db") as db:
        uri, spec, categories, params, rounds = db.execute(
            "SELECT artifact_uri, spec, categories, params, num_boost_round FROM model_version "
            "WHERE version = 1").fetchone()
    spec = json.loads(spec)
    model = work / "production.txt"
    model.write_bytes(Path(uri.removeprefix("file://")).read_bytes())
    settings = {"features": spec["features"], "categorical": spec["categorical"], "categories": json.loads(categories),
                "params": json.loads(params), "rounds": rounds, "seed": 42, "holdout_share": 0.3}
    script = work / "floor.py"
    script.write_text(FLOOR)
    result = measured([sys.executable, str(script), str(first), str(big), str(model), json.dumps(settings)],
                      dict(os.environ), work, work / "floor.json")
    result["summary"] = json.loads(result.pop("stdout"))
    return result


def stage_times(home: Path, run_id: str) -> dict[str, float]:
    """Each stage's time in the big run, in the order they ran, from its stage_run rows (skipped stages left out)."""
    import sqlite3

    with sqlite3.connect(home / "keel.db") as db:
        rows = db.execute("SELECT name, duration_ms FROM stage_run WHERE run_id = ? AND status <> 'skipped' "
                          "ORDER BY id", (run_id,)).fetchall()
    return {name: ms / 1000 for name, ms in rows}


# --- report -----------------------------------------------------------------------------------------------


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,3000000,10000000", help="rows of the big batch, comma-separated")
    ap.add_argument("--dir", type=Path, help="working folder (default: a temporary one); deleted at the end")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="keel-big-", dir=args.dir))
    rows: list[dict[str, Any]] = []
    try:
        first = generate(root / "first.parquet", FIRST_ROWS, seed=1, month=1)
        for n in sizes:
            work = root / f"n{n}"
            work.mkdir()
            t0 = time.perf_counter()
            big = generate(work / f"big-{n}.parquet", n, seed=2)
            made = time.perf_counter() - t0
            print(f"{n:,} rows: generated in {made:.1f} s ({big.stat().st_size / 2**20:.0f} MiB)", flush=True)
            keel, home = run_keel(work, first, big)
            floor = run_floor(work, first, big, home)
            s = keel["summary"]
            stages = stage_times(home, s["run_id"])
            rows.append({"rows": n, "file_mib": big.stat().st_size / 2**20,
                         "keel": {k: keel[k] for k in ("wall", "cpu", "maxrss", "tree_peak")},
                         "floor": {k: floor[k] for k in ("wall", "cpu", "maxrss", "tree_peak")},
                         "keel_status": s["status"], "decision": s["decision"],
                         "quarantined": s.get("quarantined_rows"), "floor_summary": floor["summary"],
                         "stages_s": stages})
            print(f"  keel  {keel['wall']:7.1f} s (cpu {keel['cpu']:6.1f} s)  {n / keel['wall']:>10,.0f} rows/s  max RSS {gib(keel['maxrss'])} GiB"
                  f"  tree {gib(keel['tree_peak'])} GiB  ({s['status']}, {s['decision']})", flush=True)
            print(f"  floor {floor['wall']:7.1f} s (cpu {floor['cpu']:6.1f} s)  {n / floor['wall']:>10,.0f} rows/s  max RSS "
                  f"{gib(floor['maxrss'])} GiB  tree {gib(floor['tree_peak'])} GiB", flush=True)
            staged = sum(stages.values())
            print("  keel's stages (the run's stage rows): " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
                  + f"; outside them {keel['wall'] - staged:.1f} s (start-up, plan, store writes between stages, exit)",
                  flush=True)
            shutil.rmtree(work)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("rows        keel s  floor s  x floor  keel cpu s  floor cpu s  x floor  keel rows/s  keel max RSS  keel tree"
          "  floor max RSS  x floor")
    for r in rows:
        k, f = r["keel"], r["floor"]
        print(f"{r['rows']:>10,}  {k['wall']:6.1f}  {f['wall']:7.1f}  {k['wall'] / f['wall']:7.2f}  "
              f"{k['cpu']:10.1f}  {f['cpu']:11.1f}  {k['cpu'] / f['cpu']:7.2f}  "
              f"{r['rows'] / k['wall']:>11,.0f}  {gib(k['maxrss']):>8} GiB  {gib(k['tree_peak']):>5} GiB  "
              f"{gib(f['maxrss']):>9} GiB  {k['maxrss'] / f['maxrss']:7.2f}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        grow = b["rows"] / a["rows"]
        print(f"\nfrom {a['rows']:,} to {b['rows']:,} rows ({grow:.0f}x): keel time x{b['keel']['wall'] / a['keel']['wall']:.1f}, "
              f"keel cpu x{b['keel']['cpu'] / a['keel']['cpu']:.1f}, keel max RSS x{b['keel']['maxrss'] / a['keel']['maxrss']:.1f}; "
              f"floor time x{b['floor']['wall'] / a['floor']['wall']:.1f}, floor cpu x{b['floor']['cpu'] / a['floor']['cpu']:.1f}, "
              f"floor max RSS x{b['floor']['maxrss'] / a['floor']['maxrss']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
