"""LightGBM training: deterministic, text-serialised, robust to nulls and unseen categories."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from keel.core.config import parse_config
from keel.core.data.features import feature_spec
from keel.core.errors import ModelError
from keel.core.model.train import load_booster, model_params, predict, train_model


def _frame(seed: int, colours=("red", "blue")) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.normal(size=n)
    colour = rng.choice(list(colours), n)
    y = (x + (colour == "red") + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    return pl.DataFrame({"x": x, "colour": colour, "y": y}).with_columns(
        pl.when(pl.int_range(pl.len()) % 11 == 0).then(None).otherwise(pl.col("x")).alias("x"))


def test_training_is_deterministic_and_round_trips_as_text():
    cfg = parse_config({"model": "m", "target": "y"})
    frame = _frame(1)
    spec = feature_spec(cfg, frame)
    a = train_model(frame, spec, model_params({}, 42), 50)
    b = train_model(frame, spec, model_params({}, 42), 50)
    assert a.sha256 == b.sha256 and a.text == b.text
    assert a.text.startswith("tree")  # LightGBM's text format, not a pickle
    scores = predict(load_booster(a.text), frame, spec, a.categories)
    assert scores.shape == (frame.height,) and 0 <= scores.min() and scores.max() <= 1
    assert max(a.importance, key=a.importance.get) in {"x", "colour"}


def test_unseen_categories_and_nulls_score_without_error():
    cfg = parse_config({"model": "m", "target": "y"})
    frame = _frame(2)
    spec = feature_spec(cfg, frame)
    model = train_model(frame, spec, model_params({}, 1), 30)
    new = _frame(3, colours=("red", "green", "purple")).with_columns(pl.lit(None, dtype=pl.Float64).alias("x"))
    scores = predict(load_booster(model.text), new, spec, model.categories)
    assert np.isfinite(scores).all()


def test_a_lightgbm_failure_in_training_is_one_line_naming_the_stage():
    cfg = parse_config({"model": "m", "target": "y"})
    frame = _frame(3)
    spec = feature_spec(cfg, frame)
    with pytest.raises(ModelError) as caught:
        train_model(frame, spec, model_params({"objective": "nonsense"}, 1), 5)
    assert str(caught.value) == "LightGBM failed while training: Unknown objective type name: nonsense"
    with pytest.raises(ModelError, match=r"^LightGBM failed while training: Check failed: \(num_data\) > \(0\)$"):
        train_model(frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("y")), spec, model_params({}, 1), 5)
