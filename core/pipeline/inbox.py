"""The inbox: batch files dropped in a folder or an fsspec URL, the ones the store does not know yet, in order.

The order a model's batches are taken in is their batch time (the newest value of the `timestamp` column,
when keel.toml names one), then their arrival (the file's modification time), then their name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
from sqlmodel import col, select

from keel.core.data.batches import FORMATS
from keel.core.errors import DataError
from keel.core.store.engine import unit_of_work
from keel.core.store.models import PipelineRun
from keel.core.workspace import Workspace


@dataclass(frozen=True)
class InboxBatch:
    """A batch file in the inbox: where it is, its content hash, and what orders it."""

    path: str
    sha256: str
    batch_time: datetime | None
    arrived: datetime | None

    def order(self) -> tuple[Any, ...]:
        never = datetime.min.replace(tzinfo=UTC)
        return (self.batch_time or never, self.arrived or never, self.path)


def _filesystem(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def _sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _arrived(info: dict[str, Any]) -> datetime | None:
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def _batch_time(fs: Any, path: str, column: str | None) -> datetime | None:
    if not column:
        return None
    with fs.open(path, "rb") as fh:
        try:
            frame = (pl.read_parquet(fh, columns=[column]) if FORMATS.get(_suffix(path)) == "parquet"
                     else pl.read_csv(fh, columns=[column], try_parse_dates=True))
        except Exception:  # an unreadable or odd file is ordered by arrival; the pipeline run says what is wrong
            return None
    value = frame[column].max() if frame.height else None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def list_inbox(url: str, timestamp: str | None) -> list[InboxBatch]:
    """Every CSV or Parquet file under `url`, hashed, in the inbox order."""
    try:
        fs, root = _filesystem(url)
        if not fs.isdir(root):
            raise FileNotFoundError(f"no such folder: {root}")
        found = fs.find(root, detail=True)
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"inbox {url} cannot be listed: {exc}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    batches = []
    for path, info in sorted(found.items()):
        if _suffix(path) not in FORMATS or path.rsplit("/", 1)[-1].startswith("."):
            continue
        full = path if protocol in ("file", "local") else f"{protocol}://{path}"
        batches.append(InboxBatch(full, _sha256(fs, path), _batch_time(fs, path, timestamp), _arrived(info)))
    return sorted(batches, key=InboxBatch.order)


@unit_of_work
def known_batches(ws: Workspace) -> set[str]:
    """Content hashes of the batches this model's pipeline has finished (completed or quarantined)."""
    with ws.session() as session:
        ids = session.exec(select(PipelineRun.batch_id).where(
            PipelineRun.model_name == ws.cfg.model, PipelineRun.flow == "run_pipeline",
            col(PipelineRun.status).in_(("completed", "quarantined")))).all()
    return {i for i in ids if i is not None}


def new_batches(ws: Workspace, url: str) -> list[InboxBatch]:
    """The inbox's batches the store does not know yet, in the order they are to be run."""
    known = known_batches(ws)
    seen: set[str] = set()
    out = []
    for batch in list_inbox(url, ws.cfg.timestamp):
        if batch.sha256 in known or batch.sha256 in seen:  # the same bytes twice are one batch
            continue
        seen.add(batch.sha256)
        out.append(batch)
    return out
