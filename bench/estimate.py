"""How close can a label-free estimate of accuracy get on the demo's months? keel against the bound.

Every month of 2013 from February on, estimated from the scores alone and compared with the realised
accuracy once the labels are known, mean absolute error in points:

- keel, holdout: the January model (trained as the pipeline trains it) calibrated on its training
  holdout, a random 30% of January;
- keel, recent: the same model calibrated as the pipeline calibrates it, on the newest (up to
  three) labelled months it scored before the month estimated (out of time);
- bound: the most these features allow a label-free estimate, as generously as we could set it: a
  model trained on ten other months of 2013 (every season, the future included), calibrated out of
  time on the month before the one estimated, which it never saw. What it still misses is the part
  of the month's delay rate that nothing before departure carries.

Run: PYTHONPATH=. python bench/estimate.py   (about 3 minutes; see bench/README.md, "## Estimate")
"""

from __future__ import annotations

import time
import tomllib
import warnings

import numpy as np
import polars as pl

from keel.core.config import parse_config
from keel.core.data.demo import DEMO_CONFIG, load_flights
from keel.core.data.features import feature_spec, label_array
from keel.core.model.evaluate import classification_metrics
from keel.core.model.train import load_booster, model_params, predict, train_model
from keel.core.monitoring.estimate import estimate_metrics, fit_calibrator

warnings.filterwarnings("ignore")
CFG = parse_config(tomllib.loads(DEMO_CONFIG))


def fitted(frame: pl.DataFrame):  # noqa: ANN201
    spec = feature_spec(CFG, frame)
    model = train_model(frame, spec, model_params(CFG.retrain.params, CFG.retrain.seed), CFG.retrain.num_boost_round)
    booster = load_booster(model.text)
    return lambda f: (predict(booster, f, spec, model.categories), label_array(f, spec))


def miss(score_of, calibration: list[pl.DataFrame], month: pl.DataFrame) -> tuple[float, float]:
    """(accuracy, ROC AUC) of the estimate minus the realised value on ``month``."""
    pairs = [score_of(f) for f in calibration]
    s_cal, y_cal = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    known = ~np.isnan(y_cal)
    cal = fit_calibrator(y_cal[known], s_cal[known])
    s, y = score_of(month)
    est = estimate_metrics(s, cal)
    real = classification_metrics(y[~np.isnan(y)].astype(int), s[~np.isnan(y)])
    return est["accuracy"] - real["accuracy"], est["roc_auc"] - real["roc_auc"]


def main() -> None:
    started = time.perf_counter()
    flights = load_flights().filter(pl.col("delayed").is_not_null())
    months = {m: flights.filter(pl.col("month") == m) for m in range(1, 13)}
    january = months[1].sort("time_hour", "flight_id")
    rows = np.random.default_rng(CFG.retrain.seed).random(january.height) < CFG.retrain.holdout_share
    holdout = january.filter(pl.Series(rows))
    jan_model = fitted(january.filter(pl.Series(~rows)))
    table = []
    for m in range(2, 13):
        before = [months[p] for p in range(max(2, m - CFG.monitor.calibration_batches), m)] or [holdout]
        others = flights.filter(~pl.col("month").is_in([m, m - 1]))
        table.append((m, miss(jan_model, [holdout], months[m]), miss(jan_model, before, months[m]),
                      miss(fitted(others), [months[m - 1]], months[m]), float(label_array(
                          months[m], feature_spec(CFG, months[m]))[~np.isnan(label_array(
                              months[m], feature_spec(CFG, months[m])))].mean())))
        print(f"  2013-{m:02d} done", flush=True)
    print("\naccuracy (and ROC AUC) estimated minus realised, points; delay rate of the month")
    print(f"{'month':8} {'keel, holdout':>18} {'keel, recent':>18} {'bound':>18} {'delay rate':>11}")
    for m, hold, recent, bound, rate in table:
        cells = [f"{100 * a:+6.1f} ({100 * b:+5.1f})" for a, b in (hold, recent, bound)]
        print(f"2013-{m:02d}  {cells[0]:>18} {cells[1]:>18} {cells[2]:>18} {100 * rate:10.1f}%")
    maes = [[np.mean([abs(row[k][i]) for row in table]) * 100 for i in (0, 1)] for k in (1, 2, 3)]
    print("MAE     " + " ".join(f"{f'{a:6.2f} ({b:5.2f})':>18}" for a, b in maes))
    print(f"\nkeel (recent) / bound: accuracy {maes[1][0] / maes[2][0]:.2f}x, ROC AUC {maes[1][1] / maes[2][1]:.2f}x; "
          f"the issue's target: 2 points.  {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
