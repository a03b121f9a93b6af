"""keel's label-free estimate beside NannyML's CBPE, on exactly the batches keel estimates.

Two data sets, each run through the real pipeline in a fresh KEEL_HOME (a subprocess, as a user runs
it), then read back from its store:

- demo: `keel demo`, the twelve months of 2013 New York flights, models retrained and promoted as the
  gate decides;
- shift: bench/shiftdata.py, twelve generated months with pure covariate shift (P(label | inputs)
  fixed), run batch by batch with `keel run`'s flow.

For every run that stored an estimate, the bench asks keel's own code (calibrator_for) which rows the
production model was calibrated on (the newest up to three labelled batches it scored before, out of
time; or its training holdout until there are any), recomputes keel's estimate from them and checks it
equals the stored one, and fits NannyML 0.13's CBPE on the very same (score, label) rows and lets it
estimate the same batch's scores as one chunk (its own venv, bench/.venvs/nannyml, made here if
missing; data through a Parquet file). Both are compared with the realised accuracy and ROC AUC of the
batch once its labels are known. Nothing is fitted on the month estimated.

Run:  PYTHONPATH=. python bench/estimate.py [--data demo,shift] [--keep DIR]
See bench/README.md, "## Estimate".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / "bench" / ".venvs" / "nannyml"
NANNYML = ("nannyml==0.13.*", "statsmodels", "pyarrow")  # 0.13.1 imports statsmodels without requiring it
METRICS = ("accuracy", "roc_auc")


# --- running the pipeline ---------------------------------------------------------------------------


def nannyml_python() -> Path:
    """The NannyML venv's python, made on first use (NannyML 0.13 pins conflict with keel's)."""
    python = VENV / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import nannyml"], capture_output=True).returncode:
        print(f"making {VENV.relative_to(REPO)} with {NANNYML[0]} (a few minutes, once) ...", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *NANNYML], check=True)
    return python


def run_keel(home: Path, data: str) -> Path:
    """Run the data set's batches through keel in ``home``; returns its keel.toml."""
    env = {**os.environ, "KEEL_HOME": str(home), "PYTHONPATH": str(REPO)}
    if data == "demo":
        subprocess.run([sys.executable, "-c", "from keel.cli.main import main; main()", "demo", "--json"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return home / "demo" / "keel.toml"
    from bench import shiftdata

    config, batches = shiftdata.write(home / "shift")
    script = ("import sys\nfrom keel.cli.pipeline import _run_flow\n"
              "for b in sys.argv[2:]:\n    _run_flow(b, sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", script, str(config), *map(str, batches)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return config


# --- the cases: one per estimated batch ---------------------------------------------------------------


def cases(home: Path, config: Path, check: bool = True) -> list[dict[str, Any]]:
    """Every stored estimate with its calibration rows, the batch's scores and labels, keel's estimate."""
    from sqlmodel import col, select

    from keel.core.config import Settings
    from keel.core.monitoring.calibration import calibration_rows, calibrator_for
    from keel.core.monitoring.estimate import estimate_metrics, fit_calibrator
    from keel.core.pipeline.stages import model_ref
    from keel.core.store.models import ModelVersion, PipelineRun, Prediction
    from keel.core.workspace import Workspace

    ws = Workspace.open(config, Settings(home=home))
    with ws.session() as session:
        runs = session.exec(select(PipelineRun).where(col(PipelineRun.replay_of).is_(None))
                            .order_by(col(PipelineRun.started_at))).all()
        versions = {v.version: model_ref(v) for v in session.exec(select(ModelVersion))}
    out = []
    for run in runs:
        stored = (run.summary or {}).get("estimate")
        if not stored or "error" in stored or run.batch_id is None:
            continue
        production = versions[run.production_before]
        calibrator, source, ids = calibrator_for(ws, production, run.batch_id, run.id)
        assert ids == stored["calibrated_on"], (run.source, ids, stored["calibrated_on"])
        y_ref, s_ref = calibration_rows(ws, production, source, ids)
        with ws.session() as session:
            rows = session.exec(select(Prediction.score, Prediction.actual).where(
                Prediction.dataset_id == run.batch_id, Prediction.model_version_id == production["id"])).all()
        scores = np.array([r[0] for r in rows], dtype=np.float64)
        actual = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        keel = estimate_metrics(scores, calibrator, ws.cfg.monitor.threshold, ws.cfg.monitor.prior_shift)
        for m in METRICS if check else ():  # the same rows as the pipeline's: the same estimate
            assert abs(keel[m] - stored[m]) < 1e-9, (run.source, m, keel[m], stored[m])
        # the same calibration rows, each fixed method (the default "auto" picks one of them per batch)
        variants = {m: estimate_metrics(scores, fit_calibrator(y_ref, s_ref, m), ws.cfg.monitor.threshold,
                                        ws.cfg.monitor.prior_shift) for m in ("isotonic", "platt")}
        out.append({"batch": Path(run.source or "?").stem, "version": run.production_before, "source": source,
                    "y_ref": y_ref, "s_ref": s_ref, "scores": scores, "actual": actual, "keel": keel,
                    "method": calibrator.method, "variants": variants, "threshold": ws.cfg.monitor.threshold})
    return out


def realised(case: dict[str, Any]) -> dict[str, float]:
    from keel.core.model.evaluate import classification_metrics

    known = ~np.isnan(case["actual"])
    got = classification_metrics(case["actual"][known].astype(int), case["scores"][known], case["threshold"])
    return {m: float(got[m]) for m in METRICS}


def nannyml(python: Path, found: list[dict[str, Any]], work: Path) -> dict[str, dict[str, Any]]:
    """NannyML CBPE's estimates, case by case, from its own venv (the batch's labels are dropped there)."""
    frames = []
    for i, c in enumerate(found):
        frames.append(pl.DataFrame({"case": str(i), "role": "reference", "score": c["s_ref"], "y": c["y_ref"]}))
        frames.append(pl.DataFrame({"case": str(i), "role": "analysis", "score": c["scores"], "y": c["actual"]}))
    path = work / "nannyml-cases.parquet"
    pl.concat(frames).write_parquet(path)
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
    done = subprocess.run([str(python), str(REPO / "bench" / "nannyml_cbpe.py"), str(path),
                           str(found[0]["threshold"])], capture_output=True, text=True, env=env)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"NannyML failed: {last}")
    return json.loads(done.stdout)


# --- the report ---------------------------------------------------------------------------------------


WHO = {"keel": "keel", "nannyml": "NannyML CBPE", "isotonic": "keel, isotonic only",
       "platt": "keel, Platt only"}


def report(data: str, found: list[dict[str, Any]], peer: dict[str, dict[str, Any]]) -> dict[str, Any]:
    print(f"\n{data}: estimate minus realised, points: accuracy (ROC AUC)")
    print(f"{'batch':18} {'model':>5} {'calibrated on':>13} {'rows':>6} {'keel':>14} {'method':>8} "
          f"{'NannyML':>14} {'calibrates':>10} {'realised':>14}")
    misses: dict[str, list[tuple[str, float, float]]] = {who: [] for who in WHO}
    for i, c in enumerate(found):
        real = realised(c)
        estimates = {"keel": c["keel"], "nannyml": peer[str(i)], **c["variants"]}
        for who, est in estimates.items():
            misses[who].append((c["source"], *(est[m] - real[m] for m in METRICS)))
        (_, ka, kr), (_, na, nr) = misses["keel"][-1], misses["nannyml"][-1]
        print(f"{c['batch']:18} {'v' + str(c['version']):>5} {c['source']:>13} {c['s_ref'].size:6d} "
              f"{100 * ka:+6.1f} ({100 * kr:+5.1f}) {c['method']:>8} {100 * na:+6.1f} ({100 * nr:+5.1f}) "
              f"{'yes' if peer[str(i)]['calibrated'] else 'no':>10} {real['accuracy']:6.3f} ({real['roc_auc']:.3f})")
    summary: dict[str, Any] = {}
    for label, keep in (("out of time", {"recent"}), ("all", {"recent", "holdout"})):
        n = sum(m[0] in keep for m in misses["keel"])
        if not n:
            continue
        maes = {who: [100 * float(np.mean([abs(m[k]) for m in rows if m[0] in keep])) for k in (1, 2)]
                for who, rows in misses.items()}
        summary[label] = {"batches": n, **maes}
        print(f"MAE, {label} ({n} batches), points: accuracy, ROC AUC")
        for who, (acc, auc) in maes.items():
            ratio = "" if who == "nannyml" else \
                f"   {acc / maes['nannyml'][0]:.2f}x, {auc / maes['nannyml'][1]:.2f}x NannyML's"
            print(f"  {WHO[who]:22} {acc:5.2f}  {auc:5.2f}{ratio}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo,shift", help="comma-separated: demo, shift")
    parser.add_argument("--keep", type=Path, help="keep the keel homes here (reused if they hold a store)")
    parser.add_argument("--json", type=Path, help="write the MAEs here")
    parser.add_argument("--no-check", action="store_true", help="with --keep homes made by older code: recompute "
                        "keel's estimate with this code instead of requiring it to equal the stored one")
    args = parser.parse_args()
    unknown = set(args.data.split(",")) - {"demo", "shift"}
    if unknown:
        parser.error(f"--data takes demo and shift, not {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    python = nannyml_python()
    version = subprocess.run([str(python), "-c", "import nannyml; print(nannyml.__version__)"],
                             capture_output=True, text=True, env={**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"})
    print(f"NannyML {version.stdout.strip()} in {VENV.relative_to(REPO)}")
    with tempfile.TemporaryDirectory(prefix="keel-estimate-") as tmp:
        root = args.keep or Path(tmp)
        results = {}
        for data in args.data.split(","):
            home = root / data
            config = home / ("demo/keel.toml" if data == "demo" else "shift/keel.toml")
            if not (home / "keel.db").exists():
                t0 = time.perf_counter()
                config = run_keel(home, data)
                print(f"{data}: pipeline run in {time.perf_counter() - t0:.0f} s", flush=True)
            found = cases(home, config, check=not args.no_check)
            results[data] = report(data, found, nannyml(python, found, home))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
