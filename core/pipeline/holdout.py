"""The training set and the holdout cut from a window of labelled batches: out of time, or at random.

Out of time (the default with a `timestamp`): the holdout is the newest batch's last days, about
`holdout_share` of its rows, and the candidate trains only on rows from days before the holdout's first
day, so no calendar day (UTC) is in both and the gate judges a candidate on days it has never seen, as
production will meet it. At random: the holdout is drawn from the newest batch's rows and the candidate
trains on the rest of the window, the same days included.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from keel.core.data.batches import utc_times
from keel.core.errors import DataError

_DAY = "__keel_day"


def split(parts: list[pl.DataFrame], scheme: str, share: float, seed: int,
          timestamp: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training set, holdout) from the window's labelled frames, oldest first, under ``scheme``."""
    if scheme == "random":
        return random_split(parts, share, seed)
    if not timestamp:
        raise DataError("an out-of-time holdout needs the 'timestamp' column (or [retrain] holdout = \"random\")")
    return time_split(parts, timestamp, share)


def random_split(parts: list[pl.DataFrame], share: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A seeded random ``share`` of the newest batch held out; the rest of the window trains."""
    newest = parts[-1]
    is_holdout = np.random.default_rng(seed).random(newest.height) < share
    holdout = newest.filter(pl.Series(is_holdout))
    train = pl.concat([*parts[:-1], newest.filter(pl.Series(~is_holdout))], how="diagonal_relaxed")
    return train, holdout


def time_split(parts: list[pl.DataFrame], timestamp: str, share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The newest batch's last days (about ``share`` of its rows) held out; every window row from an earlier day
    trains. When the newest batch covers one day, its newest ``share`` of rows are held out and the rest of that
    day is left out of both (the gap). Rows without a time are in neither."""
    dated = [_with_day(part, timestamp) for part in parts]
    newest = dated[-1].filter(pl.col(_DAY).is_not_null())
    if newest.height == 0:
        raise DataError(f"the newest batch has no readable '{timestamp}' values to cut an out-of-time holdout by "
                        "(set [retrain] holdout = \"random\")")
    first = holdout_start(newest[_DAY], share)
    if first is None:  # one day only: the newest rows by time, the rest of the day is the gap
        ordered = newest.sort(timestamp, maintain_order=True)
        holdout = ordered.tail(max(1, round(share * ordered.height)))
        first = ordered[_DAY][0]
    else:
        holdout = newest.filter(pl.col(_DAY) >= first)
    train = pl.concat([d.filter(pl.col(_DAY) < first) for d in dated], how="diagonal_relaxed")
    if train.height == 0:
        raise DataError(f"out-of-time holdout: no labelled row is dated before {first} (UTC), the holdout's first "
                        "day, so there is nothing to train on; send a batch spanning more days or set "
                        "[retrain] holdout = \"random\"")
    return train.drop(_DAY), holdout.drop(_DAY)


def holdout_start(days: pl.Series, share: float) -> date | None:
    """The first day of the holdout: the day boundary whose later rows come closest to ``share`` of the batch,
    keeping at least its first day for training; None when the batch covers a single day."""
    counts = days.value_counts().sort(days.name)
    if counts.height < 2:
        return None
    later = counts["count"].to_numpy()[::-1].cumsum()[::-1]  # rows on or after each day
    target = share * days.len()
    best = 1 + int(np.argmin(np.abs(later[1:] - target)))
    return counts[days.name][best]


def _with_day(frame: pl.DataFrame, timestamp: str) -> pl.DataFrame:
    times = utc_times(frame, timestamp)
    if times is None:
        raise DataError(f"'{timestamp}' is not a time column, so no out-of-time holdout can be cut by it "
                        "(set [retrain] holdout = \"random\")")
    return frame.with_columns(times.dt.date().alias(_DAY))
