"""Batches: polars I/O, content hashing, the artifact store, features and labels, the data contract."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from keel.core.config import ProjectConfig
from keel.core.errors import ConfigError, DataError, IntegrityError, UsageError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
POSITIVE_TOKENS = {"1", "true", "t", "yes", "y", "positive", "pos"}
NEGATIVE_TOKENS = {"0", "false", "f", "no", "n", "negative", "neg"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def batch_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format '{path.suffix}' (use .csv or .parquet)")
    return fmt


def read_batch(path: str | Path) -> pl.DataFrame:
    """Read a CSV or Parquet batch; any unreadable file is a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a batch file")
    fmt = batch_format(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        if fmt == "parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, infer_schema_length=None, null_values=["", "NA"], try_parse_dates=False)
    except Exception as exc:  # polars raises many types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read {fmt}: {first[:200]}") from None
    if frame.height == 0:
        raise DataError(f"{path}: the file has no rows")
    return frame


def time_span(frame: pl.DataFrame, column: str | None) -> tuple[Any, Any]:
    """(earliest, latest) of ``column`` as UTC datetimes, or (None, None) when it is absent or not a time.

    Strings are parsed (ISO 8601 and the like) and times without a zone are taken as UTC; a column
    polars cannot read as a time gives no span rather than an error: the span dates the batch's
    metrics, it is not a contract.
    """
    if not column or column not in frame.columns:
        return None, None
    values = frame.get_column(column)
    if values.dtype == pl.String:
        try:
            values = values.str.to_datetime(strict=False, time_unit="us")
        except (pl.exceptions.PolarsError, ValueError):
            return None, None
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("us"))
    if not isinstance(values.dtype, pl.Datetime):
        return None, None
    if values.dtype.time_zone is not None:
        values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    start, end = values.min(), values.max()
    return (None if start is None else start.replace(tzinfo=UTC)), (None if end is None else end.replace(tzinfo=UTC))


def frame_bytes(frame: pl.DataFrame) -> bytes:
    """Deterministic Parquet bytes of a frame: the content behind a derived dataset's hash."""
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", statistics=False)
    return buf.getvalue()


class Artifacts:
    """Content-addressed files: every artifact is named by its SHA-256 and verified on read."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str, suffix: str) -> Path:
        return self.root / sha[:2] / f"{sha}{suffix}"

    def _place(self, src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # atomic: a killed copy leaves no half file under the final name

    def put_file(self, src: Path, sha: str | None = None) -> tuple[str, Path]:
        sha = sha or sha256_file(src)
        dest = self.path(sha, src.suffix.lower())
        self._place(src, dest)
        return sha, dest

    def put_bytes(self, data: bytes, suffix: str) -> tuple[str, Path]:
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path(sha, suffix)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
        return sha, dest

    def read_verified(self, uri: str | Path, sha: str) -> bytes:
        """The artifact's bytes, after checking they still hash to ``sha``."""
        path = Path(uri)
        if not path.exists():
            raise IntegrityError(f"artifact {sha[:12]} is missing at {path}")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise IntegrityError(
                f"artifact {path.name} does not match its SHA-256 (expected {sha[:12]}, found {actual[:12]})"
            )
        return data


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


def _label_strings(series: pl.Series) -> list[str]:
    return sorted(str(v) for v in series.drop_nulls().unique().to_list())


def infer_positive(cfg: ProjectConfig, labels: pl.Series) -> str:
    """The positive class as a string: declared in keel.toml or inferred when unambiguous."""
    values = _label_strings(labels)
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


def feature_spec(cfg: ProjectConfig, frame: pl.DataFrame) -> FeatureSpec:
    """Features = every column but the target, id, timestamp and the excluded ones."""
    if cfg.target not in frame.columns:
        raise DataError(f"target column '{cfg.target}' is not in the batch (columns: {', '.join(frame.columns[:12])})")
    for key in ("id", "timestamp"):
        col = getattr(cfg, key)
        if col is not None and col not in frame.columns:
            raise DataError(f"{key} column '{col}' is not in the batch")
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


# --- the data contract -------------------------------------------------------------------------


@dataclass
class Contract:
    """What a batch must look like: columns and kinds, label values, declared ranges."""

    columns: dict[str, str]
    target: str
    labels: list[str]
    ranges: dict[str, list[float]] = field(default_factory=dict)
    id: str | None = None
    null_shares: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contract:
        return cls(**data)


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.Null:
        return "null"
    if dtype.is_numeric():
        return "numeric"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_temporal():
        return "temporal"
    return "string"


def learn_contract(cfg: ProjectConfig, frame: pl.DataFrame, spec: FeatureSpec) -> Contract:
    cols = [c for c in (*spec.features, spec.target) if c in frame.columns]
    labels = _label_strings(frame[spec.target])
    nulls = {c: frame[c].null_count() / frame.height for c in spec.features} if frame.height else {}
    return Contract({c: _kind(frame.schema[c]) for c in cols}, spec.target, labels, dict(cfg.contract.ranges),
                    spec.id, nulls)


@dataclass
class Validation:
    """The outcome of checking a batch: bad rows with reasons, or a reason to reject the batch."""

    rows: int
    bad: list[tuple[int, str]]
    batch_reason: str | None = None

    @property
    def bad_share(self) -> float:
        return len({i for i, _ in self.bad}) / self.rows if self.rows else 0.0

    @property
    def bad_indices(self) -> list[int]:
        return sorted({i for i, _ in self.bad})

    def to_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for _, reason in self.bad:
            reasons[reason] = reasons.get(reason, 0) + 1
        return {"rows": self.rows, "bad_rows": len(self.bad_indices), "bad_share": self.bad_share,
                "reasons": reasons, "batch_reason": self.batch_reason}


def _compatible(expected: str, actual: str) -> bool:
    return expected == actual or "null" in (expected, actual) or (expected == "string" and actual in ("numeric", "boolean"))


def validate(frame: pl.DataFrame, contract: Contract, cfg: ProjectConfig) -> Validation:
    """Check a batch against the contract; row problems are listed, structural ones reject the batch."""
    rows = frame.height
    for col, kind in contract.columns.items():
        if col == contract.target and col not in frame.columns:
            continue  # an unlabelled batch
        if col not in frame.columns:
            return Validation(rows, [], f"required column '{col}' is missing")
        actual = _kind(frame.schema[col])
        if not _compatible(kind, actual):
            return Validation(rows, [], f"column '{col}' is {actual}, the contract says {kind}")
    rise = cfg.contract.max_null_increase
    for col in contract.columns:
        if col in frame.columns and col != contract.target:
            share, usual = frame[col].null_count() / rows, contract.null_shares.get(col, 0.0)
            if share > usual + rise:
                return Validation(rows, [], f"column '{col}' is {share:.0%} null, {usual:.0%} in the reference "
                                            f"(limit +{rise:.0%})")
    checks: list[tuple[str, pl.Expr]] = []
    for col, (lo, hi) in contract.ranges.items():
        if col in frame.columns and frame.schema[col].is_numeric():
            checks.append((f"{col} outside [{lo:g}, {hi:g}]", (pl.col(col) < lo) | (pl.col(col) > hi)))
    for col, kind in contract.columns.items():
        if kind == "numeric" and col in frame.columns and frame.schema[col].is_float():
            checks.append((f"{col} is not finite", pl.col(col).is_infinite() | pl.col(col).is_nan()))
    if contract.target in frame.columns and contract.labels:
        allowed = contract.labels
        checks.append((f"label {contract.target} not in {allowed}",
                       pl.col(contract.target).is_not_null() & ~pl.col(contract.target).cast(pl.String).is_in(allowed)))
    if contract.id and contract.id in frame.columns:
        checks.append((f"{contract.id} is null", pl.col(contract.id).is_null()))
        checks.append((f"{contract.id} is duplicated", pl.col(contract.id).is_duplicated()))
    bad: list[tuple[int, str]] = []
    if checks:
        flags = frame.select([expr.fill_null(False).alias(f"c{i}") for i, (_, expr) in enumerate(checks)])
        for i, (reason, _) in enumerate(checks):
            idx = np.flatnonzero(flags[f"c{i}"].to_numpy())
            bad.extend((int(j), reason) for j in idx)
    result = Validation(rows, bad)
    if bad and result.bad_share > cfg.contract.max_bad_share:
        top = bad[0][1]
        result.batch_reason = (
            f"{len(result.bad_indices)} of {rows} rows ({result.bad_share:.1%}) break the data contract, "
            f"over the {cfg.contract.max_bad_share:.0%} limit (first: {top})"
        )
    return result
