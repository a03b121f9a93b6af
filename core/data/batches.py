"""Reading batches with polars, their content hashes, time spans and deterministic Parquet bytes."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tempfile
from collections.abc import Callable
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


def check_file(path: Path, name: object = None) -> os.stat_result:
    """The batch file's status, or a one-line error saying why it is no batch file: missing, a loop of symbolic
    links, a dangling link, a folder, a pipe or device (reading one would block or never end)."""
    shown = name or path
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{shown}: a loop of symbolic links, not a batch file") from None
        if path.is_symlink():
            raise UsageError(f"{shown}: a symbolic link to {os.readlink(path)}, which does not exist") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"{shown}: no such file") from None
        raise DataError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{shown}: is a directory, not a batch file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{shown}: not a regular file (a pipe, socket or device); keel reads batch files")
    return st


def snapshot_file(src: Path, folder: Path, name: object = None) -> tuple[Path, str]:
    """Copy ``src`` into ``folder``, hashing it as it is copied; the copy and its SHA-256.

    The copy is what keel then reads and stores, so the dataset's hash always matches the bytes stored
    under it, whatever happens to ``src`` meanwhile. A file that changed while it was copied (a writer
    still appending, a rewrite, a replacement) is a DataError: its copy may be torn, so keel takes none.
    The copy keeps the file's suffix (its format); the caller removes it."""
    shown = name or src
    check_file(src, shown)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=src.suffix.lower(), dir=folder)
    copy = Path(tmp)
    digest, copied = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as fout, open(src, "rb") as fin:
            before = os.fstat(fin.fileno())
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                digest.update(chunk)
                fout.write(chunk)
                copied += len(chunk)
            after = os.stat(src)  # by name: a file replaced meanwhile is a changed file too
        if (before.st_ino, before.st_size, before.st_mtime_ns) != (after.st_ino, copied, after.st_mtime_ns) \
                or before.st_size != copied:
            raise DataError(f"{shown}: the file changed while keel read it ({before.st_size:,} bytes, then "
                            f"{after.st_size:,}); run keel again once it is complete")
    except OSError as exc:
        copy.unlink(missing_ok=True)
        raise DataError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return copy, digest.hexdigest()


def read_batch(path: str | Path, name: object = None) -> pl.DataFrame:
    """Read a CSV or Parquet batch; any unreadable file is a one-line UsageError or DataError naming it
    (``name``, when given, names it instead of ``path``: the user's file behind a snapshot)."""
    path = Path(path)
    shown = name or path
    st = check_file(path, shown)
    fmt = batch_format(path)
    if st.st_size == 0:
        raise DataError(f"{shown}: the file is empty")
    problem = _sniff(path, fmt, st.st_size)
    if problem == _BLANK:
        raise DataError(f"{shown}: {problem}")
    if problem:
        raise DataError(f"{shown}: cannot read {fmt}: {problem}")
    try:
        # from bytes read once, never a memory map: a file cut short while mapped kills the process (SIGBUS)
        data = io.BytesIO(path.read_bytes())
        if fmt == "parquet":
            frame = pl.read_parquet(data)
        else:
            frame = pl.read_csv(data, infer_schema_length=None, null_values=["", "NA"], try_parse_dates=False)
    except pl.exceptions.NoDataError:
        raise DataError(f"{shown}: the file is empty") from None
    except Exception as exc:  # polars raises many types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if fmt == "csv" and "utf-8" in first.lower():
            raise DataError(f"{shown}: cannot read csv: {_not_utf8(path) or 'not UTF-8 text'}") from None
        raise DataError(f"{shown}: cannot read {fmt}: {first[:200]}") from None
    if frame.height == 0:
        raise DataError(f"{shown}: the file has no rows")
    _check_cells(frame, shown)
    return frame


def short_rows(frame: pl.DataFrame, data: Callable[[], bytes]) -> list[tuple[int, str]]:
    """The rows of a CSV batch that have fewer fields than its header (a line cut short, a blank line), as
    (row, reason): the reader fills them with nulls, which would pass for missing values. ``data`` gives the
    file's bytes.

    Free for a batch without such rows: a short row always leaves the last column null, so the bytes are read
    and the lines counted only when that column has nulls."""
    if not frame.width or frame[frame.columns[-1]].null_count() == 0:
        return []
    import csv

    reader = csv.reader(io.StringIO(data().decode("utf-8", errors="replace"), newline=""))
    width = len(next(reader, []))
    bad, count = [], 0
    for count, record in enumerate(reader, start=1):
        if len(record) < width:
            what = "a blank line" if not record else f"{len(record)} of {width} fields"
            bad.append((count - 1, f"short line: {what}"))
    return bad if count == frame.height else []  # the two readers disagree on the records: no row can be named


MAX_CELL_BYTES = 1 << 20
"""A text cell longer than this (1 MiB) means a broken file (a runaway quote, lost line ends), not data."""
_HEAD = 1 << 16
_BLANK = "the file is empty (blank lines only)"


def _sniff(path: Path, fmt: str, size: int) -> str | None:
    """What the first and last bytes say is wrong with the file, before a parser says it less clearly."""
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
        fh.seek(max(0, size - 4))
        tail = fh.read(4)
    if fmt == "parquet":
        if not head.startswith(b"PAR1"):
            return "not a Parquet file (it does not start with PAR1)"
        if tail != b"PAR1":
            return f"truncated ({size:,} bytes without the closing PAR1: cut off while copied?)"
        return None
    if head.startswith(b"PAR1"):
        return "it is a Parquet file: name it .parquet"
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32 text; keel reads UTF-8 CSV: re-encode it (iconv -f UTF-32 -t UTF-8)"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text; keel reads UTF-8 CSV: re-encode it (iconv -f UTF-16 -t UTF-8)"
    if b"\x00" in head:
        return "holds NUL bytes: UTF-16 text without a byte-order mark, or not text at all"
    if size <= len(head) and not head.strip():
        return _BLANK
    return None


def _not_utf8(path: Path) -> str | None:
    """Where the file stops being UTF-8: the first bad byte and its line, with the likely encoding."""
    offset, line, carry = 0, 1, b""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            buf = carry + chunk
            try:
                buf.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.reason == "unexpected end of data" and exc.start >= len(buf) - 3:
                    carry = buf[exc.start:]  # a character split across chunks
                    line += buf.count(b"\n", 0, exc.start)
                    offset += exc.start
                    continue
                line += buf.count(b"\n", 0, exc.start)
                return (f"not UTF-8 text (byte 0x{buf[exc.start]:02X} at offset {offset + exc.start:,}, line {line}: "
                        "Latin-1 or Windows-1252?); keel reads UTF-8 CSV: re-encode it (iconv -f LATIN1 -t UTF-8)")
            carry = b""
            line += buf.count(b"\n")
            offset += len(buf)
    return None


def _check_cells(frame: pl.DataFrame, shown: object) -> None:
    """No text cell over MAX_CELL_BYTES: one that long is a broken line keel would store, print and hash."""
    text = [c for c, dtype in frame.schema.items() if dtype == pl.String]
    if not text:
        return
    longest = frame.select(pl.col(text).str.len_bytes().max()).row(0)
    for col, size in zip(text, longest, strict=True):
        if size is not None and size > MAX_CELL_BYTES:
            row = frame[col].str.len_bytes().arg_max()
            raise DataError(f"{shown}: row {(row or 0) + 1} of column '{col}' holds {size / 2**20:.1f} MB of text "
                            f"(at most {MAX_CELL_BYTES >> 20} MB a cell): a broken line or an unclosed quote?")


def time_span(frame: pl.DataFrame, column: str | None) -> tuple[Any, Any]:
    """(earliest, latest) of ``column`` as UTC datetimes, or (None, None) when it is absent or not a time.

    Strings are parsed (ISO 8601 and the like) and times without a zone are taken as UTC; a column
    polars cannot read as a time gives no span rather than an error: the span dates the batch's
    metrics, it is not a contract.
    """
    values = utc_times(frame, column)
    if values is None:
        return None, None
    start, end = values.min(), values.max()
    return (start.replace(tzinfo=UTC) if isinstance(start, datetime) else None,
            end.replace(tzinfo=UTC) if isinstance(end, datetime) else None)


DISTINCT_PARSE_ROWS = 1_000_000
"""Time columns up to this many rows are parsed one distinct string at a time (5x faster on the demo's months);
longer ones whole: at 10M rows mapping the parsed values back raised a run's peak memory from 9.1 to 13.9 GiB."""


def utc_times(frame: pl.DataFrame, column: str | None) -> pl.Series | None:
    """``column`` as naive UTC datetimes (strings parsed, zones converted, times without a zone taken as UTC),
    or None when it is absent or not a time."""
    if not column or column not in frame.columns:
        return None
    values = frame.get_column(column)
    if values.dtype == pl.String:
        # up to DISTINCT_PARSE_ROWS, each distinct string parsed once (a batch's times repeat: the demo's 28k rows
        # hold 700 hours), in order of first appearance, so the format polars infers from the first value is the one
        # it infers for the column; above it, the column parsed whole (mapping 10M rows back cost 4.8 GiB of peak)
        to_parse = values.unique(maintain_order=True) if len(values) <= DISTINCT_PARSE_ROWS else values
        try:
            parsed = to_parse.str.to_datetime(strict=False, time_unit="us")
        except (pl.exceptions.PolarsError, ValueError):
            return None
        values = values.replace_strict(to_parse, parsed, return_dtype=parsed.dtype) if len(to_parse) < len(values) \
            else parsed
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("us"))
    if not isinstance(values.dtype, pl.Datetime):
        return None
    if values.dtype.time_zone is not None:
        values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return values


def frame_bytes(frame: pl.DataFrame) -> bytes:
    """Deterministic Parquet bytes of a frame: the content behind a derived dataset's hash."""
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", statistics=False)
    return buf.getvalue()
