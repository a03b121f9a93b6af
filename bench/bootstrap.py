"""Benchmark: the gate's model comparison (DeLong, McNemar, paired bootstrap) on large holdouts, two code
snapshots side by side.

`keel.core.model.evaluate.compare_models` as the pipeline's evaluate stage calls it (500 resamples, the default
metrics) on a seeded holdout of each size, for `core/model/evaluate.py` at BASE (a git revision) and in the work
tree, alternating, each in its own process (so neither inherits the other's memory). Each round checks that both
give the same comparison, value for value.

Run:  PYTHONPATH=. python bench/bootstrap.py [--base REV] [--rows 300000,2900000] [--rounds 2] [--json FILE]
See bench/README.md, "## Big batches".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE = r"""
import importlib.util, json, resource, sys, time
import numpy as np
spec = importlib.util.spec_from_file_location("evaluate_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["evaluate_under_test"] = module
spec.loader.exec_module(module)
n = int(sys.argv[2])
rng = np.random.default_rng(0)
y = (rng.random(n) < 0.2).astype(int)
candidate = np.clip(rng.random(n) * 0.5 + y * 0.3, 0, 1)
production = np.clip(rng.random(n) * 0.5 + y * 0.25, 0, 1)
start = time.perf_counter()
result = module.compare_models(y, candidate, production, n_boot=500).to_dict()
wall = time.perf_counter() - start
print(json.dumps({"wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "result": result}))
"""


def run(source: Path, rows: int) -> dict:
    out = subprocess.run([sys.executable, "-c", ONE, str(source), str(rows)], check=True, capture_output=True,
                         text=True, cwd=REPO)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="e5b02ce", help="git revision to compare against (default: the code "
                        "before the per-row terms)")
    parser.add_argument("--rows", default="300000,2900000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "evaluate_base.py"
        base.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{args.base}:core/model/evaluate.py"],
                                        check=True, capture_output=True).stdout)
        current = REPO / "core" / "model" / "evaluate.py"
        figures: dict[int, dict[str, list[dict]]] = {n: {"base": [], "current": []} for n in sizes}
        for r in range(args.rounds):
            for n in sizes:
                for side, source in (("base", base), ("current", current)):
                    figures[n][side].append(run(source, n))
                    print(f"round {r + 1}, {n:,} rows, {side}: {figures[n][side][-1]['wall_s']:.1f} s", flush=True)
                same = figures[n]["base"][-1]["result"] == figures[n]["current"][-1]["result"]
                print(f"round {r + 1}, {n:,} rows: the same comparison from both: {'yes' if same else 'NO'}")
                if not same:
                    raise SystemExit("the two snapshots disagree")
    print()
    print(f"{'holdout rows':>12}  {args.base + ' s':>12}  {'work tree s':>12}  {'ratio':>6}  "
          f"{'peak RSS MiB (base, work tree)':>30}")
    for n in sizes:
        b = statistics.median(x["wall_s"] for x in figures[n]["base"])
        c = statistics.median(x["wall_s"] for x in figures[n]["current"])
        rss = (max(x["peak_rss_mib"] for x in figures[n]["base"]), max(x["peak_rss_mib"] for x in figures[n]["current"]))
        print(f"{n:>12,}  {b:>12.1f}  {c:>12.1f}  {b / c:>5.1f}x  {rss[0]:>14.0f}, {rss[1]:.0f}")
    if args.json:
        args.json.write_text(json.dumps({str(n): {side: [{k: v for k, v in x.items() if k != "result"} for x in xs]
                                                  for side, xs in f.items()} for n, f in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
