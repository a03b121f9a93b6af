"""LightGBM training: deterministic, text-serialised, robust to nulls and unseen categories."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

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


_AHEAD = """
import json
import os
from pathlib import Path

import numpy as np

from keel.core.model import fit


def training_children():
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"keel.core.model.fit" in cmdline:
            found.append(int(stat.parent.name))
    return found


fit.warm_up()
fit.warm_up()  # one waits at a time
ahead = training_children()
rng = np.random.default_rng(0)
X = rng.normal(size=(400, 2))
y = (X[:, 0] > 0).astype(float)
text, _ = fit.fit(X, y, ["a", "b"], [], {"objective": "binary", "verbose": -1, "num_threads": 1}, 5)
after_fit = training_children()
fit.warm_up()
left = training_children()
print(json.dumps({"ahead": ahead, "after_fit": after_fit, "left": left, "fitted": text.startswith("tree")}))
"""


def test_a_training_process_started_ahead_serves_the_next_fit_and_one_left_unused_ends_with_keel():
    """`keel run` starts the next fit's training process before the run's first stage (LightGBM imports on the
    other core meanwhile): one at a time, the fit takes it rather than starting another, and one the run never
    used does not outlive the process that started it."""
    out = subprocess.run([sys.executable, "-c", _AHEAD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["fitted"]
    assert len(seen["ahead"]) == 1, "one training process waits, however often it is asked for"
    assert seen["after_fit"] == [], "the fit took the waiting process (a second one would still be waiting)"
    (left,) = seen["left"]
    deadline = time.monotonic() + 10
    while Path(f"/proc/{left}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{left}").exists(), "the unused training process outlived keel"
