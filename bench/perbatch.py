"""Benchmark: keel's per-batch cost with a long-lived Prefect server, two code snapshots side by side.

The long-lived-server part of bench/pipeline.py alone (`keel server start` in a fresh KEEL_HOME, untimed;
`keel demo` on all months but the last; `keel run` on the last month's batch), run for the code at BASE (a git
revision) and for the work tree, interleaved round by round, with the bare script once per round as the floor
(it follows the work tree's decisions). Both sides' results are checked against the bare script's (decisions,
metrics, drifted features, model SHA-256s).

Run:  PYTHONPATH=. python bench/perbatch.py [--base main] [--rounds 3] [--months 12] [--json FILE]
See bench/README.md, "## Pipeline".
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline as bench  # noqa: E402

REPO = bench.REPO


def snapshot_rev(work: Path, rev: str) -> Path:
    """keel's source at a git revision, laid out as bench.snapshot lays out the work tree."""
    tree = work / "base-tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    src = work / "base-src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(tree / "keel", src / "keel")
    for package in ("core", "flows", "tui", "cli"):
        shutil.copytree(tree / package, src / "keel" / package)
    return src


def per_batch(warm: dict[str, Any], bare: dict[str, Any], n: int) -> dict[str, float]:
    calls = warm["calls"][2:]
    months = bare["months"][2:n]
    t = warm["timers"]
    excl = {k: v["excl_s"] for k, v in t.items()}
    batches = len(warm["calls"])
    tasks = sum(v for k, v in excl.items() if k.startswith("task: "))
    return {
        "keel_median_s": statistics.median(c["wall_s"] for c in calls),
        "bare_median_s": statistics.median(m["wall_s"] for m in months),
        "over_floor_pct": (sum(c["wall_s"] for c in calls) / sum(m["wall_s"] for m in months) - 1) * 100,
        "prefect_outside_body_s": statistics.median(c["wall_s"] - c["body_s"] for c in calls),
        "body_outside_stages_s": excl.get("flow: body", 0.0) / batches,
        "prefect_tasks_s": tasks / batches,
        "predictions_s": excl.get("store: record_predictions", 0.0) / batches,
        "other_store_s": (sum(v for k, v in excl.items() if k.startswith("store: "))
                          - excl.get("store: record_predictions", 0.0)) / batches,
        "artifacts_s": sum(v for k, v in excl.items() if k.startswith("io: ")) / batches,
        "demo_wall_s": warm["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="git revision to compare with the work tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from keel.core.data.demo import write_batches

    work = args.keep or Path(tempfile.mkdtemp(prefix="keel-perbatch-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        srcs = {"base": snapshot_rev(work, args.base), "head": bench.snapshot(work)}
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip()
        print(f"base {args.base}, head {rev}", flush=True)
        batches = write_batches(work / "batches", args.months)
        ids = [bench.sha256_file(p) for p in batches]
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            out: dict[str, Any] = {}
            order = ("base", "head") if r % 2 == 0 else ("head", "base")
            for side in order:
                bench.SRC = srcs[side]
                side_work = work / side
                side_work.mkdir(exist_ok=True)
                warm, one = bench.run_warm(args, side_work, r, batches)
                out[side] = {"warm": warm, "one": one}
            bench.SRC = srcs["head"]
            head = out["head"]
            plan = work / f"plan{r}.json"
            plan.write_text(json.dumps(bench.plan_from(head["warm"]["summaries"] + head["one"]["summaries"], ids)))
            print(f"round {r + 1}: bare script ...", end=" ", flush=True)
            bare = bench.run_child("bare", work / f"bare{r}.json", bench.child_env(), work, "--plan", str(plan),
                                   "--batches", str(work / "batches"), "--months", str(args.months))
            print(f"{bare['wall_s']:.1f} s", flush=True)
            out["bare"] = bare
            for side in ("base", "head"):
                both = out[side]
                keel_all = {"summaries": both["warm"]["summaries"] + both["one"]["summaries"],
                            "model_sha": both["one"]["model_sha"]}
                both["verify"] = bench.verify(keel_all, bare)
            rounds.append(out)
            if args.json:
                args.json.write_text(json.dumps(rounds, indent=1, default=str))
        report(rounds, args.months - 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(rounds: list[dict[str, Any]], n: int) -> None:
    rows = []
    med = statistics.median

    def add(name: str, fn: Any, fmt: str) -> None:
        cells = []
        for side in ("base", "head"):
            values = [fn(r, side) for r in rounds]
            cells += [" ".join(fmt.format(v) for v in values), fmt.format(med(values))]
        rows.append([name, *cells])

    pb = lambda r, s: per_batch(r[s]["warm"], r["bare"], n)  # noqa: E731
    add(f"keel demo --months {n}, wall (s)", lambda r, s: r[s]["warm"]["wall_s"], "{:.1f}")
    add(f"per batch, months 3-{n}: keel flow call, median (s)", lambda r, s: pb(r, s)["keel_median_s"], "{:.2f}")
    add(f"per batch, months 3-{n}: bare month, median (s)", lambda r, s: pb(r, s)["bare_median_s"], "{:.2f}")
    add("per batch: keel over floor, summed (goal < 10 %)", lambda r, s: pb(r, s)["over_floor_pct"], "{:+.1f}%")
    add("  Prefect outside the flow body, median (s)", lambda r, s: pb(r, s)["prefect_outside_body_s"], "{:.2f}")
    add("  flow body outside the stages, mean (s)", lambda r, s: pb(r, s)["body_outside_stages_s"], "{:.2f}")
    add("  Prefect around the tasks, mean (s)", lambda r, s: pb(r, s)["prefect_tasks_s"], "{:.2f}")
    add("  prediction writes, mean (s)", lambda r, s: pb(r, s)["predictions_s"], "{:.2f}")
    add("  other store writes and reads, mean (s)", lambda r, s: pb(r, s)["other_store_s"], "{:.2f}")
    add("  artifacts, mean (s)", lambda r, s: pb(r, s)["artifacts_s"], "{:.2f}")
    add("keel run on the last batch, wall (s)", lambda r, s: r[s]["one"]["wall_s"], "{:.1f}")
    add("  floor: the bare script on it alone (s)", lambda r, s: bench.floor_one({"bare": r["bare"]}), "{:.1f}")
    add("  keel run - floor (goal <= +1 s)",
        lambda r, s: r[s]["one"]["wall_s"] - bench.floor_one({"bare": r["bare"]}), "{:+.1f}")
    add("  keel run served by keel's runner (1 yes, 0 no)", lambda r, s: 1.0 if r[s]["one"].get("served") else 0.0,
        "{:.0f}")
    header = ["", "base, per round", "base median", "head, per round", "head median"]
    print()
    print(bench.fmt_table(header, rows))
    for i, r in enumerate(rounds):
        for side in ("base", "head"):
            ok = "the same" if not r[side]["verify"] else "; ".join(r[side]["verify"])
            print(f"round {i + 1}, {side}: results against the bare script's: {ok}")


if __name__ == "__main__":
    main()
