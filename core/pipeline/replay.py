"""Replaying quarantined data: find a quarantined batch's immutable stored copy by id or prefix, and
mark its quarantine rows replayed once a run of it under the current keel.toml got through."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import case, update
from sqlmodel import col, func, select

from keel.core.errors import ChecksumMismatch, NotFound, UsageError
from keel.core.store.engine import session_scope, unit_of_work
from keel.core.store.models import DatasetVersion, Quarantine
from keel.core.workspace import Workspace


@dataclass(frozen=True)
class ReplayTarget:
    """A quarantined batch: its dataset version, the stored copy to run again, what is held back."""

    dataset_id: str
    path: Path
    source: str | None
    rows: int  # quarantine rows (the whole-batch row included)
    pending: int  # of those, not yet replayed


@unit_of_work
def resolve(ws: Workspace, prefix: str) -> ReplayTarget:
    """The quarantined batch whose dataset version id is ``prefix`` or starts with it (unique)."""
    prefix = prefix.strip().lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"'{prefix}' is not a dataset version id (give at least 4 hex digits of it)")
    with ws.session() as session:
        found = session.exec(
            select(Quarantine.dataset_id, func.count(), func.sum(case((col(Quarantine.replayed), 1), else_=0)))
            .where(col(Quarantine.dataset_id).startswith(prefix)).group_by(Quarantine.dataset_id)
            .order_by(Quarantine.dataset_id).limit(3)).all()
        if not found:
            return _dead_letter(ws, prefix)
        if len(found) > 1:
            raise UsageError(f"{prefix} is ambiguous: it starts {', '.join(d[:12] for d, *_ in found)}"
                             f"{' and more' if len(found) > 2 else ''}; give more digits")
        dataset_id, rows, replayed = found[0]
        dv = session.get(DatasetVersion, dataset_id)
    if dv is None:
        raise NotFound(f"dataset version {dataset_id[:12]} is quarantined but not in the store")
    where = ws.artifacts.locate(dv.artifact_uri)
    if isinstance(where, Path) and not where.exists():
        raise ChecksumMismatch(f"the stored copy of dataset {dataset_id[:12]} is missing at {where}")
    path = ws.artifacts.local_copy(where, dataset_id, ws.settings.home_path / "replay")  # from object storage
    return ReplayTarget(dataset_id, path, dv.source, int(rows), int(rows) - int(replayed or 0))


@unit_of_work
def _dead_letter(ws: Workspace, prefix: str) -> ReplayTarget:
    """A batch whose runs failed (a dead letter), by its dataset version or its last failed run's id."""
    from keel.core.store.queries import dead_letters

    found = [d for d in dead_letters(ws.engine, ws.cfg.model, limit=10_000)
             if (d["dataset_id"] or "").startswith(prefix) or d["run_id"].startswith(prefix)]
    if not found:
        raise NotFound(f"no quarantined or failed batch has a dataset version (or failed run) starting with {prefix} "
                       "(see 'keel dead-letters' and the alerts view of 'keel tui')")
    if len(found) > 1:
        raise UsageError(f"{prefix} is ambiguous: {', '.join((d['dataset_id'] or d['run_id'])[:12] for d in found[:3])}; "
                         "give more digits")
    letter = found[0]
    if letter["dataset_id"]:  # it got as far as ingest: the immutable stored copy
        with ws.session() as session:
            dv = session.get(DatasetVersion, letter["dataset_id"])
        if dv is not None:
            where = ws.artifacts.locate(dv.artifact_uri)
            path = ws.artifacts.local_copy(where, dv.id, ws.settings.home_path / "replay")
            return ReplayTarget(dv.id, path, dv.source, 0, 0)
    source = Path(letter["source"])  # failed before its copy was stored: the file it came from
    if not source.is_file():
        raise NotFound(f"the failed batch {letter['source']} is gone and was never stored")
    return ReplayTarget(letter["dataset_id"] or "", source, letter["source"], 0, 0)


@unit_of_work
def mark_replayed(ws: Workspace, dataset_id: str, run_id: str, actor: str) -> int:
    """Mark the batch's quarantine rows replayed (audited); returns how many changed (0 the second time)."""
    from keel.core.registry import audit
    with session_scope(ws.engine) as session:
        changed = session.execute(
            update(Quarantine).where(col(Quarantine.dataset_id) == dataset_id, col(Quarantine.replayed) == False)  # noqa: E712
            .values(replayed=True)).rowcount  # type: ignore[attr-defined]
        if changed:
            audit.append(session, actor, "quarantine:replay", ws.cfg.model, None,
                         f"replayed under keel.toml {ws.cfg.config_hash()[:12]}",
                         {"dataset_id": dataset_id, "run_id": run_id, "rows": changed})
        return int(changed or 0)
