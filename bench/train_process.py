"""What training in a child process costs: keel's train_model (LightGBM's fit in `python -m keel.core.model.fit`, so
a training job out of memory fails the stage, not keel) beside the same fit in keel's own process, in one run.

Usage: python bench/train_process.py [--rows 6000 --repeats 5]
The frame is the demo's: months 1-3 of the 2013 New York flights sampled to --rows, with the demo's keel.toml.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib

import polars as pl

from keel.core.config import parse_config
from keel.core.data.demo import DEMO_CONFIG, load_flights
from keel.core.data.features import feature_spec, label_array
from keel.core.model.train import category_codes, design_matrix, model_params, train_model


def in_process(frame: pl.DataFrame, spec, params: dict, rounds: int) -> str:  # noqa: ANN001
    """The fit as keel did it before: the same inputs, LightGBM in this process."""
    import lightgbm
    import numpy as np

    y = label_array(frame, spec)
    frame = frame.filter(pl.Series(~np.isnan(y)))
    y = y[~np.isnan(y)]
    X = design_matrix(frame, spec, category_codes(frame, spec.categorical))
    cat_idx = [spec.features.index(c) for c in spec.categorical]
    data = lightgbm.Dataset(X, label=y, feature_name=spec.features, categorical_feature=cat_idx, free_raw_data=True,
                            params={"verbosity": -1})
    return lightgbm.train(params, data, num_boost_round=rounds).model_to_string()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    flights = load_flights()
    frame = flights.filter(pl.col("month") <= 3).sample(args.rows, seed=1)
    cfg = parse_config(tomllib.loads(DEMO_CONFIG))
    spec = feature_spec(cfg, frame)
    params, rounds = model_params(cfg.retrain.params, cfg.retrain.seed), cfg.retrain.num_boost_round
    same = in_process(frame, spec, params, rounds) == train_model(frame, spec, params, rounds).text  # and warm-up
    times: dict[str, list[float]] = {"in keel's process": [], "child process (keel)": []}
    for _ in range(args.repeats):
        for name, fit in (("in keel's process", lambda: in_process(frame, spec, params, rounds)),
                          ("child process (keel)", lambda: train_model(frame, spec, params, rounds))):
            start = time.perf_counter()
            fit()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["in keel's process"])
    print(f"{args.rows} rows, {rounds} rounds, median of {args.repeats}; same model text: {same}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:22s} {med:6.2f} s  ({med / base:4.1f}x, +{med - base:5.2f} s)")


if __name__ == "__main__":
    main()
