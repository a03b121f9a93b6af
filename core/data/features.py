"""Which columns are features, which categorical, and how labels map to 0/1."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl

from keel.core.errors import ConfigError, DataError

POSITIVE_TOKENS = {"1", "true", "t", "yes", "y", "positive", "pos"}
NEGATIVE_TOKENS = {"0", "false", "f", "no", "n", "negative", "neg"}


class ColumnRoles(Protocol):
    """The keys of keel.toml that say what the columns are (a ProjectConfig or a Columns)."""

    @property
    def target(self) -> str: ...
    @property
    def positive(self) -> str | int | bool | None: ...
    @property
    def id(self) -> str | None: ...
    @property
    def timestamp(self) -> str | None: ...
    @property
    def categorical(self) -> list[str] | None: ...
    @property
    def exclude(self) -> list[str]: ...


@dataclass(frozen=True)
class Columns:
    """What keel.toml says the columns are: everything a FeatureSpec is learned from, and nothing else."""

    target: str
    positive: str | int | bool | None = None
    id: str | None = None
    timestamp: str | None = None
    categorical: list[str] | None = None
    exclude: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, roles: ColumnRoles) -> Columns:
        return cls(roles.target, roles.positive, roles.id, roles.timestamp,
                   None if roles.categorical is None else list(roles.categorical), list(roles.exclude))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns are features, which of them categorical, and how labels map to 0/1."""

    features: list[str]
    categorical: list[str]
    target: str
    positive: str
    id: str | None = None
    timestamp: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_strings(series: pl.Series) -> list[str]:
    return sorted(str(v) for v in series.drop_nulls().unique().to_list())


def infer_positive(cfg: ColumnRoles, labels: pl.Series) -> str:
    """The positive class as a string: declared in keel.toml or inferred when unambiguous."""
    values = label_strings(labels)
    if len(values) > 2:
        shown = ", ".join(repr(v) for v in values[:5])
        raise ConfigError(f"target '{cfg.target}' has {len(values)} classes ({shown}, ...); keel needs a binary label")
    if cfg.positive is not None:
        positive = str(cfg.positive).lower() if isinstance(cfg.positive, bool) else str(cfg.positive)
        return positive
    lowered = {v.lower() for v in values}
    pos = [v for v in values if v.lower() in POSITIVE_TOKENS]
    if len(pos) == 1 and lowered - {pos[0].lower()} <= NEGATIVE_TOKENS:
        return pos[0]
    if not values:
        raise ConfigError(f"target '{cfg.target}' has no labels to learn the positive class from; set 'positive'")
    shown = " and ".join(repr(v) for v in values)
    raise ConfigError(f"target '{cfg.target}' has values {shown}: set 'positive' in keel.toml to the positive one")


def require_roles(cfg: ColumnRoles, frame: pl.DataFrame) -> None:
    """The target column and keel.toml's id and timestamp columns must be in the batch."""
    if cfg.target not in frame.columns:
        raise DataError(f"target column '{cfg.target}' is not in the batch (columns: {', '.join(frame.columns[:12])})")
    for key in ("id", "timestamp"):
        col = getattr(cfg, key)
        if col is not None and col not in frame.columns:
            raise DataError(f"{key} column '{col}' is not in the batch")


def feature_spec(cfg: ColumnRoles, frame: pl.DataFrame) -> FeatureSpec:
    """Features = every column but the target, id, timestamp and the excluded ones."""
    require_roles(cfg, frame)
    kind = frame.schema[cfg.target]
    if kind.is_nested() or kind.is_temporal() or kind == pl.Binary:
        raise DataError(f"target column '{cfg.target}' is {kind}: a label is a number, a boolean or a text")
    unknown = [c for c in cfg.exclude + (cfg.categorical or []) if c not in frame.columns]
    if unknown:
        raise ConfigError(f"keel.toml names column '{unknown[0]}', which is not in the batch")
    skip = {cfg.target, cfg.id, cfg.timestamp, *cfg.exclude}
    features = [c for c in frame.columns if c not in skip]
    if not features:
        raise ConfigError("no feature columns are left after target, id, timestamp and exclude")
    if cfg.categorical is not None:
        categorical = [c for c in features if c in set(cfg.categorical)]
    else:
        categorical = [
            c for c in features
            if frame.schema[c] in (pl.String, pl.Boolean) or isinstance(frame.schema[c], pl.Categorical | pl.Enum)
        ]
    bad = [c for c in features if c not in categorical and not frame.schema[c].is_numeric() and frame.schema[c] != pl.Null]
    if bad:
        raise ConfigError(f"column '{bad[0]}' ({frame.schema[bad[0]]}) is neither numeric nor categorical: add it to 'categorical' or 'exclude'")
    positive = infer_positive(cfg, frame[cfg.target])
    return FeatureSpec(features, categorical, cfg.target, positive, cfg.id, cfg.timestamp)


def label_array(frame: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Labels as float 1.0 / 0.0, NaN where unlabelled."""
    col = frame[spec.target]
    as_str = col.cast(pl.String).str.to_lowercase() if col.dtype == pl.Boolean else col.cast(pl.String)
    positive = spec.positive.lower() if col.dtype == pl.Boolean else spec.positive
    out = (as_str == positive).cast(pl.Float64).to_numpy().copy()
    out[col.is_null().to_numpy()] = np.nan
    return out


def row_ids(frame: pl.DataFrame, spec: FeatureSpec) -> list[str]:
    if spec.id:
        return frame[spec.id].cast(pl.String).to_list()
    return [str(i) for i in range(frame.height)]
