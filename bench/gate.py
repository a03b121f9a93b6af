"""Benchmark: the gate judged by the future, for the out-of-time holdout beside the random one.

For each data set and each holdout scheme (`[retrain] holdout = "time"` and `"random"`), one run:

1. the twelve monthly batches go through keel's real pipeline (Prefect's temporary server, the SQLite store,
   LightGBM, Alibi Detect) in a fresh KEEL_HOME, in a subprocess, with the scheme set in keel.toml;
2. for every gate decision with a production model to compare against (promote, reject or review), the
   candidate and the production model of that moment score the NEXT labelled batch, and the gate metric's
   difference there (candidate minus production, point estimate; DeLong's 95% interval beside it) is the
   future's verdict: the candidate
   was worth promoting when it was not worse beyond the gate's margin (difference >= -margin), the gate's
   own non-inferiority rule;
3. counted: promotions that were worse there beyond the margin, rejections and reviews of candidates that
   were not worse there beyond the margin (and of those, better beyond it), and the agreement of the gate's
   decisions with the future's (a review counts as "not promoted").

Data sets: the demo (2013 New York flights, `keel demo`'s configuration) and a generated one
(`generated_months`, seeded): a daily shock to the label that a day-level feature identifies (weather-like,
so a model can memorise the days it trained on), seasonal covariate drift, and a change of concept in July
(one feature's effect reverses). The generated set runs with `cooldown = 0` so every month is a decision,
and without the demo's churn guardrail (`max_churn`), so its gate decides on the holdout comparison alone.

Run:  PYTHONPATH=. python bench/gate.py [--sets demo,generated] [--keep DIR [--reuse]] [--json FILE]
See bench/README.md, "## Gate".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
SCHEMES = ("time", "random")
CHANGE_MONTH = 7  # the generated set's concept changes on 1 July

GENERATED_CONFIG = """\
model = "generated"
target = "y"
id = "rid"
timestamp = "ts"
categorical = ["region"]
exclude = ["day_of_month"]

[retrain]
window = 3
every = 1
cooldown = 0

[gate]
metric = "roc_auc"
margin = 0.005
"""


def generated_months(folder: Path, seed: int = 7, rows: int = 6000) -> list[Path]:
    """Twelve monthly batches of 2021 with a known change of concept on 1 July (x2's effect reverses)."""
    rng = np.random.default_rng(seed)
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for month in range(1, 13):
        start = datetime(2021, month, 1)
        days = ((datetime(2021 + month // 12, month % 12 + 1, 1)) - start).days
        day = rng.integers(0, days, rows)
        shock = rng.normal(0, 0.8, days)  # the day's own luck: it never comes back
        weather = rng.normal(np.sin(2 * np.pi * month / 12), 1, days)  # known per day: identifies the day
        x1 = rng.normal(0.3 * np.cos(2 * np.pi * month / 12), 1, rows)  # seasonal covariate drift
        x2, x3 = rng.normal(0, 1, rows), rng.normal(0, 1, rows)
        region = rng.choice(["north", "south", "east", "west"], rows)
        b2 = 0.8 if month < CHANGE_MONTH else -0.8
        logit = -0.8 + 0.9 * x1 + b2 * x2 + 0.4 * x3 + 0.5 * (region == "north") + 0.3 * weather[day] + shock[day]
        y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
        ts = [start + timedelta(days=int(d), seconds=int(s)) for d, s in zip(day, rng.integers(0, 86400, rows),
                                                                              strict=True)]
        frame = pl.DataFrame({"rid": [f"{month}-{i}" for i in range(rows)], "ts": ts, "x1": x1, "x2": x2, "x3": x3,
                              "region": region, "weather": weather[day], "day_of_month": day + 1, "y": y}).sort("ts")
        path = folder / f"2021-{month:02d}.parquet"
        frame.write_parquet(path)
        paths.append(path)
    return paths


RUNNER = """
import json, sys
from keel.flows.run_pipeline import run_pipeline
config, out = sys.argv[1], sys.argv[2]
summaries = [run_pipeline(batch=b, config=config) for b in sys.argv[3:]]
open(out, "w").write(json.dumps(summaries, default=str))
"""


def run_keel(home: Path, config_text: str, batches: list[Path]) -> list[dict[str, Any]]:
    """The batches through keel's pipeline in a fresh home (one process, Prefect's temporary server)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "keel.toml"
    config.write_text(config_text)
    out = home / "summaries.json"
    env = {**os.environ, "KEEL_HOME": str(home / ".keel"), "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(config), str(out), *map(str, batches)], env=env,
                          capture_output=True, text=True, cwd=home)
    if proc.returncode != 0:
        raise SystemExit(f"keel failed in {home}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def with_scheme(config_text: str, scheme: str) -> str:
    """keel.toml with `[retrain] holdout` set (the [retrain] section exists in both configurations)."""
    return config_text.replace("[retrain]\n", f'[retrain]\nholdout = "{scheme}"\n', 1)


def judge(home: Path, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every gate decision against production, with both models scored on the next labelled batch."""
    from sqlmodel import select

    from keel.core.config import Settings
    from keel.core.data.features import label_array
    from keel.core.model.evaluate import compare_models
    from keel.core.pipeline import stages
    from keel.core.store import records
    from keel.core.store.models import ModelVersion
    from keel.core.workspace import Workspace

    ws = Workspace.open(home / "keel.toml", Settings(home=home / ".keel"))
    metric, margin = ws.cfg.gate.metric, ws.cfg.gate.margin

    def version(number: int) -> dict[str, Any]:
        with ws.session() as session:
            mv = session.exec(select(ModelVersion).where(ModelVersion.model_name == ws.cfg.model,
                                                         ModelVersion.version == number)).one()
            return stages.model_ref(mv)

    def scored(ref: dict[str, Any], dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
        bad = records.quarantined_rows(ws, dataset_id)
        y = label_array(stages.without_rows(stages.load_dataset(ws, dataset_id), bad), stages.spec_of(ref))
        keep = ~np.isnan(y)
        return y[keep].astype(int), stages.score(ws, dataset_id, ref, bad)[keep]

    out = []
    for i, s in enumerate(summaries[:-1]):
        before = summaries[i - 1].get("production_version") if i else None
        if not s.get("model_version") or not before:
            continue
        nxt = summaries[i + 1]
        candidate, production = version(s["model_version"]), version(before)
        gate_delta = (s.get("evaluation") or {}).get("metrics", {}).get(metric, {}).get("delta")
        (y, cand_p), (_, prod_p) = scored(candidate, nxt["dataset_version"]), scored(production, nxt["dataset_version"])
        compared = compare_models(y, cand_p, prod_p, metrics=[metric], alpha=ws.cfg.gate.alpha, n_boot=0,
                                  threshold=ws.cfg.monitor.threshold).metrics[metric]
        cand, prod, future = compared.candidate, compared.production, compared.delta
        promoted = s["decision"] == "promoted"
        worth = future >= -margin
        reasons = " ".join(s.get("reasons") or [])
        why = "churn" if "Churn above" in reasons else "inconclusive" if "inconclusive" in reasons else ""
        out.append({"month": i + 1, "candidate": s["model_version"], "production": before, "decision": s["decision"],
                    "why": why,
                    "holdout_delta": gate_delta, "next_candidate": cand, "next_production": prod,
                    "next_delta": future, "next_ci": [compared.ci_low, compared.ci_high], "agree": promoted == worth,
                    "surely_worse": promoted and compared.ci_high is not None and compared.ci_high < -margin,
                    "bad_promotion": promoted and not worth, "missed": (not promoted) and worth,
                    "missed_better": (not promoted) and future > margin})
    return out


def tally(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    return {"decisions": n, "promoted": sum(r["decision"] == "promoted" for r in rows),
            "agree": sum(r["agree"] for r in rows), "agreement": (sum(r["agree"] for r in rows) / n) if n else None,
            "bad_promotions": sum(r["bad_promotion"] for r in rows),
            "surely_worse": sum(r["surely_worse"] for r in rows), "missed": sum(r["missed"] for r in rows),
            "missed_better": sum(r["missed_better"] for r in rows),
            "mean_holdout_delta": float(np.mean([r["holdout_delta"] for r in rows if r["holdout_delta"] is not None]))
            if n else None, "mean_next_delta": float(np.mean([r["next_delta"] for r in rows])) if n else None}


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def report(name: str, margin: float, results: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n== {name}: every gate decision against production, judged on the next labelled batch "
          f"(margin {margin})")
    for scheme in SCHEMES:
        print(f"\n  holdout = {scheme!r}")
        print(f"  {'month':<6} {'cand':>4} {'prod':>4} {'decision':<9} {'why':<12} {'holdout d':>9} {'next cand':>9} "
              f"{'next prod':>9} {'next d':>7} {'95% CI (DeLong)':>17}  verdict")
        for r in results[scheme]:
            verdict = ("agrees" if r["agree"] else "promoted, worse there" if r["bad_promotion"] else
                       "not promoted, not worse there")
            print(f"  {MONTHS[r['month'] - 1]:<6} v{r['candidate']:<3} v{r['production']:<3} {r['decision']:<9} {r['why']:<12} "
                  f"{fmt(r['holdout_delta']):>9} {r['next_candidate']:>9.3f} {r['next_production']:>9.3f} "
                  f"{fmt(r['next_delta']):>7} {fmt(r['next_ci'][0]) + ' ' + fmt(r['next_ci'][1]):>17}  {verdict}")
    t = {s: tally(results[s]) for s in SCHEMES}
    print(f"\n  {'':<44} {'time':>10} {'random':>10}")
    lines = [("gate decisions against production", "decisions", "{}"), ("promoted", "promoted", "{}"),
             ("agree with the next batch", "agree", "{}"), ("agreement", "agreement", "{:.0%}"),
             ("promotions worse there beyond the margin", "bad_promotions", "{}"),
             ("  of which its whole 95% CI beyond the margin", "surely_worse", "{}"),
             ("rejections/reviews not worse there", "missed", "{}"),
             ("  of which better there beyond the margin", "missed_better", "{}"),
             ("mean candidate - production, holdout", "mean_holdout_delta", "{:+.3f}"),
             ("mean candidate - production, next batch", "mean_next_delta", "{:+.3f}")]
    for label, key, form in lines:
        cells = ["-" if t[s][key] is None else form.format(t[s][key]) for s in SCHEMES]
        print(f"  {label:<44} {cells[0]:>10} {cells[1]:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="demo,generated", help="comma-separated: demo, generated")
    parser.add_argument("--keep", type=Path, help="keep the keel homes under this folder")
    parser.add_argument("--json", type=Path, help="write every decision and the tallies here")
    parser.add_argument("--reuse", action="store_true", help="with --keep: judge the kept runs again instead of "
                        "running keel")
    args = parser.parse_args()
    from keel.core.data.demo import DEMO_CONFIG, write_batches

    root = args.keep or Path(tempfile.mkdtemp(prefix="keel-gate-"))
    everything: dict[str, Any] = {}
    for name in args.sets.split(","):
        if name == "demo":
            batches, config = write_batches(root / "demo-batches", 12), DEMO_CONFIG
        elif name == "generated":
            batches, config = generated_months(root / "generated-batches"), GENERATED_CONFIG
        else:
            raise SystemExit(f"unknown data set {name!r} (demo, generated)")
        results = {}
        for scheme in SCHEMES:
            start = time.perf_counter()
            home = root / f"{name}-{scheme}"
            reused = args.reuse and (home / "summaries.json").exists()  # judge a kept run again, keel not rerun
            summaries = (json.loads((home / "summaries.json").read_text()) if reused else
                         run_keel(home, with_scheme(config, scheme), batches))
            results[scheme] = judge(home, summaries)
            decisions = " ".join(f"{MONTHS[i][:3]}:{s['decision']}" for i, s in enumerate(summaries))
            took = "kept run judged again" if reused else f"12 months in {time.perf_counter() - start:.0f} s"
            print(f"{name}, holdout = {scheme!r}: {took}; {decisions}", flush=True)
        from keel.core.config import parse_config

        report(name, parse_config({**_toml(config)}).gate.margin, results)
        everything[name] = {s: {"decisions": results[s], "tally": tally(results[s])} for s in SCHEMES}
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2, default=str))


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


if __name__ == "__main__":
    main()
