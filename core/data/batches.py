"""Reading batches with polars, their content hashes, time spans and deterministic Parquet bytes."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from keel.core.errors import DataError, UsageError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


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
    return (start.replace(tzinfo=UTC) if isinstance(start, datetime) else None,
            end.replace(tzinfo=UTC) if isinstance(end, datetime) else None)


def frame_bytes(frame: pl.DataFrame) -> bytes:
    """Deterministic Parquet bytes of a frame: the content behind a derived dataset's hash."""
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", statistics=False)
    return buf.getvalue()
