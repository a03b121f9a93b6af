"""A generated data set with pure covariate shift: the inputs move month by month, P(label | inputs) never does.

Twelve monthly Parquet batches and a keel.toml, seeded. Four numeric inputs and one categorical; the
label is drawn from one fixed logistic function of them, so any change of a month's positive rate is
carried by the inputs (what CBPE assumes). The means of x1 and x2 and the mix of regions drift over
the year, enough to move the positive rate by about 10 points, and the model (trained by keel on the
first months) sees values it rarely saw.

Used by bench/estimate.py; run alone to write the batches: python bench/shiftdata.py FOLDER
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

CONFIG = """\
# keel.toml for bench/shiftdata.py: pure covariate shift, P(y | x) fixed
model = "shift"
target = "y"
positive = 1
id = "row_id"
timestamp = "at"
categorical = ["region"]

[retrain]
window = 3
every = 3
cooldown = 1

[gate]
metric = "roc_auc"
margin = 0.005
max_churn = 0.10
"""

REGIONS = ("north", "south", "east", "west")
REGION_EFFECT = np.array([0.6, -0.4, 0.0, -0.9])


def truth(x1: np.ndarray, x2: np.ndarray, x3: np.ndarray, x4: np.ndarray, region: np.ndarray) -> np.ndarray:
    """P(y = 1 | inputs): the same function every month."""
    z = 1.1 * x1 - 0.8 * x2 + 0.6 * np.sin(2 * x3) + 0.5 * x1 * x4 + REGION_EFFECT[region] - 1.1
    return 1.0 / (1.0 + np.exp(-z))


def month(rng: np.random.Generator, m: int, rows: int) -> pl.DataFrame:
    """Month ``m`` (1-12): the inputs' distribution moves with m, the label's rule does not."""
    phase = (m - 1) / 11  # 0 in January, 1 in December
    x1 = rng.normal(-0.3 + 0.9 * phase, 1.0, rows)
    x2 = rng.normal(0.4 * np.sin(np.pi * phase), 1.0 + 0.3 * phase, rows)
    x3 = rng.uniform(-2, 2, rows)
    x4 = rng.normal(0, 1, rows)
    mix = np.array([0.4 - 0.25 * phase, 0.3, 0.2, 0.1 + 0.25 * phase])
    region = rng.choice(len(REGIONS), rows, p=mix / mix.sum())
    y = (rng.random(rows) < truth(x1, x2, x3, x4, region)).astype(np.int8)
    start = datetime(2024, m, 1)
    at = [start + timedelta(minutes=int(t)) for t in np.sort(rng.integers(0, 28 * 24 * 60, rows))]
    return pl.DataFrame({
        "row_id": [f"{m:02d}-{i:06d}" for i in range(rows)], "at": at,
        "x1": x1, "x2": x2, "x3": x3, "x4": x4, "region": [REGIONS[r] for r in region], "y": y,
    })


def write(folder: Path, months: int = 12, rows: int = 8000, seed: int = 2013) -> tuple[Path, list[Path]]:
    """Write keel.toml and one Parquet batch per month into ``folder``; returns (config, batches)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = []
    for m in range(1, months + 1):
        path = folder / f"shift-{m:02d}.parquet"
        month(rng, m, rows).write_parquet(path)
        batches.append(path)
    config = folder / "keel.toml"
    config.write_text(CONFIG)
    return config, batches


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/shiftdata.py FOLDER")
    cfg, written = write(Path(sys.argv[1]))
    for path in written:
        frame = pl.read_parquet(path)
        print(f"{path.name}: {frame.height} rows, positive rate {frame['y'].mean():.3f}")
