"""The holdout the gate judges on: out of time when the data has a timestamp, at random only when asked.

Built with keel's own ingest and make_training_sets on the real store; the training set and holdout are
read back from their registered dataset versions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from keel.core.errors import ConfigError, DataError

SHARE = 0.3


def _month(folder: Path, month: int, seed: int, n: int = 3000) -> Path:
    """A month of rows at random times (shuffled, as a real export may be), a zone-aware timestamp."""
    rng = np.random.default_rng(seed)
    start = datetime(2013, month, 1)
    days = (datetime(2013, month + 1, 1) - start).days
    ts = [start + timedelta(seconds=int(s)) for s in rng.integers(0, days * 86400, n)]
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int)
    frame = pl.DataFrame({"rid": [f"{month}-{i}" for i in range(n)], "ts": ts, "x": x, "y": y})
    path = folder / f"2013-{month:02d}.parquet"
    frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York")
                       ).write_parquet(path)
    return path


def _sets(tmp_path: Path, toml: str, months: list[Path]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    from keel.core.pipeline import stages
    from keel.core.workspace import Workspace

    config = tmp_path / "keel.toml"
    config.write_text(f'model = "m"\ntarget = "y"\nid = "rid"\n{toml}')
    ws = Workspace.open(config)
    window = [stages.ingest(ws, str(path))["id"] for path in months]
    sets = stages.make_training_sets(ws, window)
    newest = stages.load_dataset(ws, window[-1])
    return stages.load_dataset(ws, sets["train"]), stages.load_dataset(ws, sets["holdout"]), newest


def _utc(frame: pl.DataFrame) -> pl.Series:
    return frame["ts"].dt.convert_time_zone("UTC")


@pytest.fixture
def months(tmp_path: Path, keel_home: Path) -> list[Path]:
    return [_month(tmp_path, m, seed=m) for m in (3, 4, 5)]


def test_with_a_timestamp_the_holdout_is_the_newest_days_and_training_ends_the_day_before(tmp_path, months):
    train, holdout, newest = _sets(tmp_path, 'timestamp = "ts"\n', months)
    train_days, holdout_days = set(_utc(train).dt.date()), set(_utc(holdout).dt.date())
    assert train_days and holdout_days and not train_days & holdout_days
    assert _utc(holdout).min() > _utc(train).max()
    assert abs(holdout.height / newest.height - SHARE) < 1 / 31, "about holdout_share of the newest month"
    assert set(holdout["rid"]) <= set(newest["rid"])
    # a day boundary cuts the month, so no row is lost: every labelled row is in one set or the other
    assert train.height + holdout.height == 3 * 3000


def test_the_out_of_time_holdout_is_the_default_with_a_timestamp(tmp_path, months):
    (tmp_path / "explicit").mkdir()
    _, explicit, _ = _sets(tmp_path / "explicit", 'timestamp = "ts"\n[retrain]\nholdout = "time"\n', [months[-1]])
    _, default, _ = _sets(tmp_path, 'timestamp = "ts"\n', [months[-1]])
    assert set(default["rid"]) == set(explicit["rid"])


def test_random_holdout_remains_when_asked_and_shares_days_with_training(tmp_path, months):
    train, holdout, newest = _sets(tmp_path, 'timestamp = "ts"\n[retrain]\nholdout = "random"\n', months)
    assert set(_utc(train).dt.date()) & set(_utc(holdout).dt.date()), "random rows share days with training"
    assert _utc(holdout).min() < _utc(train).max()
    assert abs(holdout.height / newest.height - SHARE) < 0.03


def test_without_a_timestamp_the_holdout_is_random(tmp_path, months):
    train, holdout, newest = _sets(tmp_path, "", months)
    assert set(_utc(train).dt.date()) & set(_utc(holdout).dt.date())
    assert abs(holdout.height / newest.height - SHARE) < 0.03


def test_a_batch_of_one_day_holds_out_its_newest_rows_and_leaves_the_rest_of_the_day_out(tmp_path, keel_home):
    day = pl.read_parquet(_month(tmp_path, 6, seed=6)).filter(pl.col("ts").dt.convert_time_zone("UTC").dt.day() == 2)
    path = tmp_path / "one-day.parquet"
    day.write_parquet(path)
    train, holdout, newest = _sets(tmp_path, 'timestamp = "ts"\n', [_month(tmp_path, 5, seed=5), path])
    assert holdout.height == round(SHARE * newest.height)
    assert set(_utc(holdout).dt.date()) == {datetime(2013, 6, 2).date()}
    assert _utc(train).max() < datetime(2013, 6, 2, tzinfo=UTC)


def test_an_out_of_time_holdout_with_nothing_before_it_is_one_clear_error(tmp_path, keel_home):
    day = pl.read_parquet(_month(tmp_path, 6, seed=6)).filter(pl.col("ts").dt.convert_time_zone("UTC").dt.day() == 2)
    path = tmp_path / "one-day.parquet"
    day.write_parquet(path)
    with pytest.raises(DataError, match='nothing to train on.*holdout = "random"'):
        _sets(tmp_path, 'timestamp = "ts"\n', [path])


@pytest.mark.parametrize(("toml", "message"), [
    ('[retrain]\nholdout = "latest"\n', "bad value for 'retrain.holdout': Input should be 'time' or 'random'"),
    ('[retrain]\nholdout = "time"\n', "holdout = 'time' needs 'timestamp'"),
])
def test_a_bad_holdout_setting_is_rejected_at_load_naming_the_key(tmp_path, toml, message):
    from keel.core.config import load_config

    config = tmp_path / "keel.toml"
    config.write_text(f'model = "m"\ntarget = "y"\n{toml}')
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        load_config(config)
    assert "\n" not in str(err.value)


def test_the_label_free_estimate_calibrated_on_the_holdout_uses_the_out_of_time_rows(tmp_path, months):
    """calibrate_on = "holdout" (and "recent" before production has scored labelled batches) fits on the model's
    training holdout: with a timestamp that is the newest days, after every row the model trained on."""
    from keel.core.data.features import Columns
    from keel.core.model.train import model_params
    from keel.core.monitoring.calibration import calibrator_for
    from keel.core.pipeline import run as book
    from keel.core.pipeline import stages
    from keel.core.store import records
    from keel.core.workspace import Workspace

    config = tmp_path / "keel.toml"
    config.write_text('model = "m"\ntarget = "y"\nid = "rid"\ntimestamp = "ts"\n[monitor]\ncalibrate_on = "holdout"\n')
    ws = Workspace.open(config)
    window = [stages.ingest(ws, str(path))["id"] for path in months[:2]]
    run_id = records.start_run(ws, str(months[1]), None)
    sets = stages.make_training_sets(ws, window)
    columns, params = Columns.of(ws.cfg), model_params({}, 1)
    model = stages.train(ws, sets["train"], columns, params, 20)
    evaluation = stages.evaluate(ws, sets["holdout"], model, None, 0.5, 0.05, 50)
    mv = book.register_candidate(ws, run_id, sets, model, params, 20, columns.to_dict(), evaluation, None)
    incoming = stages.ingest(ws, str(months[2]))["id"]

    _, source, fitted_on = calibrator_for(ws, stages.model_ref(mv), incoming, run_id)

    assert (source, fitted_on) == ("holdout", [sets["holdout"]])
    calibration_rows = stages.load_dataset(ws, fitted_on[0])
    assert _utc(calibration_rows).min() > _utc(stages.load_dataset(ws, sets["train"])).max()
