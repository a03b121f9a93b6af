"""LightGBM training with fixed seeds; models are saved as LightGBM text, never pickle."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from keel.core.data.features import FeatureSpec, label_array
from keel.core.errors import lightgbm_errors, map_exceptions

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    # one thread: on a shared or busy machine OpenMP's spinning threads made training 5x slower
    # (12.8 s against 2.2 s for the demo's largest window with one core taken); set it in [retrain] params
    "num_threads": 1,
    "deterministic": True,
    "force_col_wise": True,
    "verbosity": -1,
}


def model_params(overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    return {**DEFAULT_PARAMS, **overrides, "seed": seed}


def code_hash() -> str:
    """Hash of the training code and LightGBM's version: a change retrains instead of reusing."""
    import lightgbm

    src = Path(__file__).read_bytes()
    return hashlib.sha256(src + lightgbm.__version__.encode()).hexdigest()


def category_codes(frame: pl.DataFrame, categorical: list[str]) -> dict[str, list[str]]:
    """Fixed, sorted category list per categorical column, learned from the training data."""
    return {c: sorted(str(v) for v in frame[c].drop_nulls().unique().to_list()) for c in categorical}


def design_matrix(frame: pl.DataFrame, spec: FeatureSpec, categories: dict[str, list[str]]) -> np.ndarray:
    """Features as a float matrix: numerics as they are, categories as fixed codes, unseen/null as NaN."""
    exprs = []
    for col in spec.features:
        if col in categories:
            mapping = pl.DataFrame({"v": categories[col], "c": np.arange(len(categories[col]), dtype=np.float64)})
            exprs.append(
                pl.col(col).cast(pl.String).replace_strict(mapping["v"], mapping["c"], default=None,
                                                           return_dtype=pl.Float64).alias(col)
            )
        elif col in frame.columns:
            exprs.append(pl.col(col).cast(pl.Float64).alias(col))
        else:
            exprs.append(pl.lit(None, dtype=pl.Float64).alias(col))
    return frame.select(exprs).to_numpy().astype(np.float64, copy=False)


@dataclass
class TrainedModel:
    """A trained booster's text and what is needed to use it again."""

    text: str
    sha256: str
    features: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    importance: dict[str, float]
    params: dict[str, Any]
    num_boost_round: int


def _lightgbm() -> Any:
    """LightGBM, its messages sent to the `keel.lightgbm` logger instead of printed: a failure reaches the user
    once, as keel's one-line error (its reason taken from the exception), not also as LightGBM's own print."""
    import lightgbm

    if not getattr(lightgbm, "_keel_logger", False):
        lightgbm.register_logger(logging.getLogger("keel.lightgbm"))
        lightgbm._keel_logger = True  # type: ignore[attr-defined]
    return lightgbm


@contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """LightGBM's C++ side prints its fatal errors straight to file descriptor 2 before raising them; the
    raised error is what keel reports, so those lines go to the `keel.lightgbm` log instead of the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text:
                logging.getLogger("keel.lightgbm").debug("%s", text)


def train_model(frame: pl.DataFrame, spec: FeatureSpec, params: dict[str, Any], num_boost_round: int) -> TrainedModel:
    """Fit LightGBM on the labelled rows of ``frame``; deterministic for the same inputs. The fit runs in a child
    process (keel.core.model.fit): a training job out of memory fails this call with a ModelError, not keel."""
    from keel.core.model.fit import fit

    with map_exceptions(lightgbm_errors("training", step="train")):  # numpy's MemoryError too
        y = label_array(frame, spec)
        keep = ~np.isnan(y)
        frame = frame.filter(pl.Series(keep))
        y = y[keep]
        categories = category_codes(frame, spec.categorical)
        X = design_matrix(frame, spec, categories)
    cat_idx = [spec.features.index(c) for c in spec.categorical]
    text, gains = fit(X, y, spec.features, cat_idx, params, num_boost_round)
    total = float(sum(gains)) or 1.0
    importance = {f: float(g) / total for f, g in zip(spec.features, gains, strict=True)}
    return TrainedModel(text, hashlib.sha256(text.encode()).hexdigest(), spec.features, spec.categorical,
                        categories, importance, params, num_boost_round)


def load_booster(text: str) -> Any:
    lgb = _lightgbm()

    with map_exceptions(lightgbm_errors("loading a model")), _native_stderr_to_log():
        booster = lgb.Booster(model_str=text)
    return booster


def predict(booster: Any, frame: pl.DataFrame, spec: FeatureSpec, categories: dict[str, list[str]]) -> np.ndarray:
    """P(positive) for every row of ``frame``."""
    X = design_matrix(frame, spec, categories)
    return np.asarray(booster.predict(X, num_threads=DEFAULT_PARAMS["num_threads"]), dtype=np.float64)
