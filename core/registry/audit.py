"""The append-only, hash-chained audit log: appending events and verifying the whole chain.

Each event stores the previous event's hash; the audit_head row (count and newest hash) moves in
the same transaction, so an edit, a removal in the middle and a removal of the newest rows all show.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from keel.core.errors import Conflict
from keel.core.store.engine import unit_of_work
from keel.core.store.models import AuditEvent, AuditHead

GENESIS = "0" * 64


def _stamp(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds")


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over every field of the event, including the previous event's hash."""
    body = {
        "at": _stamp(event.at), "actor": event.actor, "action": event.action,
        "model_name": event.model_name, "version": event.version, "reason": event.reason,
        "details": event.details, "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def now() -> datetime:
    """Audit time, UTC to the microsecond: both stores give back exactly what was hashed."""
    return datetime.now(UTC)


def append(session: Session, actor: str, action: str, model_name: str | None, version: int | None,
           reason: str | None, details: dict[str, Any] | None = None) -> AuditEvent:
    """Add an event and move the head, in the caller's transaction; a concurrent writer is a Conflict."""
    head = session.get(AuditHead, 1)
    prev = head.hash if head is not None else GENESIS
    event = AuditEvent(at=now(), actor=actor, action=action, model_name=model_name, version=version,
                       reason=reason, details=details, prev_hash=prev, hash="")
    event.hash = event_hash(event)
    session.add(event)
    session.flush()  # a second successor of the same event breaks the unique prev_hash
    if head is None:
        session.add(AuditHead(id=1, count=1, hash=event.hash, event_id=event.id))
        session.flush()  # two first events at once: the primary key decides
        return event
    moved = session.execute(
        update(AuditHead).where(col(AuditHead.id) == 1, col(AuditHead.hash) == prev)
        .values(count=AuditHead.count + 1, hash=event.hash, event_id=event.id)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("the audit log moved while you acted; look again and retry")
    session.expire(head)
    return event


@dataclass
class Verification:
    """The outcome of checking the chain: ok, how many events, and the first problem."""

    ok: bool
    events: int
    first_bad_id: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@unit_of_work
def verify(engine: Engine, batch: int = 5000) -> Verification:
    """Walk the chain from the first event: recompute every hash, check every link and the head."""
    prev, count, last_id = GENESIS, 0, 0
    with Session(engine) as session:
        while True:
            rows = session.exec(select(AuditEvent).where(col(AuditEvent.id) > last_id)
                                .order_by(col(AuditEvent.id)).limit(batch)).all()
            if not rows:
                break
            for event in rows:
                if event.prev_hash != prev:
                    what = ("the first event does not start the chain" if prev == GENESIS and count == 0
                            else f"it does not follow event #{last_id}: an event between them was removed "
                                 "or the link was edited")
                    return Verification(False, count, event.id, f"event #{event.id}: {what}")
                if event_hash(event) != event.hash:
                    return Verification(False, count, event.id,
                                        f"event #{event.id} ({event.action} by {event.actor}) was edited: "
                                        "its content no longer matches its hash")
                prev, count, last_id = event.hash, count + 1, event.id or 0
            session.expunge_all()
        head = session.get(AuditHead, 1)
    if head is None:
        if count:
            return Verification(False, count, None, "the audit head is missing: it was deleted")
        return Verification(True, 0)
    if head.hash != prev or head.count != count:
        missing = head.count - count
        if missing > 0:
            return Verification(False, count, last_id + 1 if last_id else None,
                                f"{missing} event(s) after #{last_id} were removed (the head records "
                                f"{head.count} events, event #{head.event_id} last)")
        return Verification(False, count, head.event_id,
                            f"the audit head (count {head.count}) does not match the chain ({count} events)")
    return Verification(True, count)
