"""Do keel's alerts point at batches where the model was hurt? The demo year, old rules beside new ones.

One run: the demo's twelve months of 2013 go through keel's pipeline in this process (the flow itself,
as `keel demo` runs it) in a fresh KEEL_HOME, with every alert rule switched on (the demo's keel.toml
plus `[alerts] on_feature_drift = true`), so the store records every rule's verdict on every run
(`alert_check`) and the alerts that fired (`alert`). Then it reads the store and, per rule, counts the
alerts and measures them against what happened:

- hurt: the production model's [monitor] metric (ROC AUC) on the batch fell more than `max_drop` below
  its training-time value (realised, from the batch's labels), or the label-free estimate said it
  would (issue 13's definition of a useful alert);
- hurt, realised: the realised fall alone (the demo's batches carry their labels, so it is known).

precision = alerts on hurt batches / alerts; recall = hurt batches alerted / hurt batches. A batch
"alerted" by a set of rules when any drift rule of that set fired on it. The old default drift rule
(any drifted feature, or drifted scores) is recomputed from each run's stored drift summary exactly as
keel computed it before; the per-feature rule kept as an option (`on_feature_drift`) is the same rule
without the scores.

Run: PYTHONPATH=. python bench/alerts.py [--keep DIR] [--json FILE]   (about 5 minutes on 2 busy cores)
     PYTHONPATH=. python bench/alerts.py --read DIR    (the figures again from a kept store, no runs)
See bench/README.md, "## Alerts".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
OLD = ("drift (old)", "drop", "estimated_drop")  # the drift-related rules on by default before
NEW = ("drift", "prediction_drift", "drop", "estimated_drop")  # on by default now
DRIFT_OLD, DRIFT_NEW = ("drift (old)",), ("drift", "prediction_drift")


def run_demo(home: Path) -> Path:
    """The demo year through the pipeline in this process; returns the keel.toml it used."""
    os.environ["KEEL_HOME"] = str(home)
    from keel.core.data.demo import DEMO_CONFIG, write_batches
    from keel.flows.run_pipeline import run_pipeline  # configures Prefect under KEEL_HOME

    folder = home / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "keel.toml"
    config.write_text(DEMO_CONFIG + "\n[alerts]\non_feature_drift = true  # every rule on: the bench compares them\n")
    for i, batch in enumerate(write_batches(folder / "batches", 12)):
        started = time.perf_counter()
        summary = run_pipeline(batch=str(batch), config=str(config), home=str(home))
        print(f"  {MONTHS[i]} 2013: {summary['status']}, {summary['decision']} ({time.perf_counter() - started:.1f} s)",
              flush=True)
    return config


def read_store(config: Path, home: Path) -> list[dict[str, Any]]:
    """Per run, oldest first: the month, production's baseline, realised and estimated metric, each rule's verdict."""
    from sqlmodel import Session, col, select

    from keel.core.config import Settings
    from keel.core.monitoring.rules import worse
    from keel.core.store.models import Alert, AlertCheck, ModelVersion, PipelineRun
    from keel.core.workspace import Workspace

    ws = Workspace.open(config, Settings(home=home))
    metric, max_drop = ws.cfg.monitor.metric, ws.cfg.monitor.max_drop
    rows = []
    with Session(ws.engine) as session:
        runs = session.exec(select(PipelineRun).where(PipelineRun.status == "completed")
                            .order_by(col(PipelineRun.started_at))).all()
        for run in runs:
            s = run.summary or {}
            production = session.exec(select(ModelVersion).where(
                ModelVersion.model_name == ws.cfg.model, ModelVersion.version == s.get("production_before"))).first()
            if production is None:
                continue  # the first month: no production model to alert about
            base = (production.train_metrics or {}).get(metric)
            realised = (s.get("metrics") or {}).get(metric)
            estimated = (s.get("estimate") or {}).get(metric)
            checks = {c.rule: c for c in session.exec(select(AlertCheck).where(AlertCheck.run_id == run.id))}
            fired = {a.rule for a in session.exec(select(Alert).where(Alert.run_id == run.id))}
            drift = s.get("drift") or {}
            old = bool(drift.get("drifted")) or bool((drift.get("prediction") or {}).get("drifted"))
            real_hurt = realised is not None and worse(metric, realised, base, max_drop)
            est_hurt = estimated is not None and worse(metric, estimated, base, max_drop)
            rows.append({
                "month": MONTHS[int(Path(s["batch"]).stem.rsplit("-", 1)[-1]) - 1], "production": production.version,
                "base": base, "realised": realised, "estimated": estimated, "hurt": real_hurt or est_hurt,
                "hurt_realised": real_hurt,
                "fired": {**{rule: rule in fired for rule in checks}, "drift (old)": old},
                "values": {rule: c.value for rule, c in checks.items()},
                "drifted": len(drift.get("drifted") or []),
            })
    return rows


def score(rows: list[dict[str, Any]], rules: tuple[str, ...], truth: str) -> dict[str, Any]:
    """Batches alerted by any of ``rules``, those that were hurt, precision and recall against ``truth``, and
    the pages (alerts of all of ``rules`` together: one batch can page once per rule)."""
    alerted = [any(r["fired"].get(rule) for rule in rules) for r in rows]
    hurt = [r[truth] for r in rows]
    hits = sum(a and h for a, h in zip(alerted, hurt, strict=True))
    pages = sum(bool(r["fired"].get(rule)) for r in rows for rule in rules)
    return {"alerts": sum(alerted), "pages": pages, "hits": hits, "hurt": sum(hurt),
            "precision": hits / sum(alerted) if any(alerted) else None,
            "recall": hits / sum(hurt) if any(hurt) else None}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    print("\nper month: production's ROC AUC at training, realised on the month and estimated without labels; drifted "
          "features, importance-weighted drift, prediction drift's effect size; the rules that fired")
    print(f"{'month':5} {'prod':>4} {'train':>6} {'real':>6} {'est':>6} {'hurt':>9} {'drifted':>7} {'weighted':>8} "
          f"{'pred eff':>8}  fired")
    for r in rows:
        hurt = ("yes" if r["hurt_realised"] else "est.") if r["hurt"] else "no"
        fired = ", ".join(rule for rule, f in r["fired"].items() if f) or "-"
        weighted, effect = r["values"].get("drift"), r["values"].get("prediction_drift")
        print(f"{r['month']:5} {'v' + str(r['production']):>4} {r['base']:6.3f} {r['realised']:6.3f} "
              f"{r['estimated'] if r['estimated'] is not None else float('nan'):6.3f} {hurt:>9} {r['drifted']:7d} "
              f"{weighted if weighted is not None else float('nan'):8.2f} {effect if effect is not None else float('nan'):8.3f}  {fired}")
    out: dict[str, Any] = {"months": rows}
    for truth, words in (("hurt", "hurt = realised or estimated drop beyond max_drop"),
                         ("hurt_realised", "hurt = realised drop beyond max_drop")):
        n = sum(r[truth] for r in rows)
        print(f"\n{words}: {n} of {len(rows)} batches")
        print(f"{'rule':26} {'default':>12} {'alerts':>6} {'on hurt':>7} {'precision':>9} {'recall':>6} {'pages':>5}")
        table = {}
        lines = [(rule, "old" if rule in OLD and rule not in NEW else ("old and new" if rule in OLD else "new"),
                  (rule,)) for rule in ("drift (old)", "feature_drift", "drift", "prediction_drift", "drop",
                                        "estimated_drop")]
        lines[1] = ("feature_drift", "option", ("feature_drift",))
        lines += [("any drift alert, old", "old", DRIFT_OLD), ("any drift alert, new", "new", DRIFT_NEW),
                  ("any alert, old defaults", "old", OLD), ("any alert, new defaults", "new", NEW)]
        for name, default, rules in lines:
            m = table[name] = score(rows, rules, truth)
            print(f"{name:26} {default:>12} {m['alerts']:6d} {m['hits']:7d} {pct(m['precision']):>9} {pct(m['recall']):>6} {m['pages']:5d}")
        out[truth] = table
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="KEEL_HOME to use and keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--read", type=Path, help="only read the store of an earlier --keep DIR (no runs)")
    args = parser.parse_args()
    if args.read is not None:
        result = report(read_store(args.read.resolve() / "demo" / "keel.toml", args.read.resolve()))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        return
    home = (args.keep or Path(tempfile.mkdtemp(prefix="keel-alerts-"))).resolve()
    started = time.perf_counter()
    try:
        print(f"the demo year in {home}, every alert rule on", flush=True)
        config = run_demo(home)
        result = report(read_store(config, home))
        print(f"\n{time.perf_counter() - started:.0f} s in all")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
