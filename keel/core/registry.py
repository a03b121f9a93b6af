"""Promote, reject, review and roll back as single transactions, each with its audit event.

The production alias and its audit event commit together or not at all. The alias carries a
revision number: a writer that read an older revision loses with a Conflict.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlmodel import Session, col, select

from keel.core.errors import Conflict, NotAuthorized, NotFound
from keel.core.store.models import Alias, AuditEvent, ModelVersion, Review, ReviewDecision, utcnow
from keel.core.workspace import Workspace

GENESIS = "0" * 64
PRODUCTION = "production"


def current_actor() -> str:
    """The operating-system user, with the SSH client address when there is one."""
    user = getpass.getuser()
    ssh = os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION")
    return f"{user}@{ssh.split()[0]}" if ssh else user


def _user(actor: str) -> str:
    return actor.split("@", 1)[0].removesuffix(" (pipeline)")


def _stamp(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(timespec="microseconds")


def event_hash(event: AuditEvent) -> str:
    body = {
        "at": _stamp(event.at), "actor": event.actor, "action": event.action,
        "model_name": event.model_name, "version": event.version, "reason": event.reason,
        "details": event.details, "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def append_audit(session: Session, actor: str, action: str, model_name: str | None, version: int | None,
                 reason: str | None, details: dict[str, Any] | None = None) -> AuditEvent:
    """Add a hash-chained audit event to the session's transaction."""
    last = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(1)).first()
    event = AuditEvent(at=utcnow(), actor=actor, action=action, model_name=model_name, version=version,
                       reason=reason, details=details, prev_hash=last.hash if last else GENESIS, hash="")
    event.hash = event_hash(event)
    session.add(event)
    return event


def get_version(session: Session, model_name: str, version: int) -> ModelVersion:
    row = session.exec(
        select(ModelVersion).where(ModelVersion.model_name == model_name, ModelVersion.version == version)
    ).first()
    if row is None:
        raise NotFound(f"model '{model_name}' has no version {version}")
    return row


def production_version(session: Session, model_name: str) -> ModelVersion | None:
    alias = session.get(Alias, (model_name, PRODUCTION))
    return session.get(ModelVersion, alias.model_version_id) if alias else None


def check_authorised(ws: Workspace, actor: str, action: str, model_name: str, version: int | None) -> None:
    """Refuse (and audit the refusal) when approvers are listed and the actor is not one of them."""
    approvers = ws.cfg.review.approvers
    if not approvers or _user(actor) in approvers:
        return
    with ws.session() as session:
        append_audit(session, actor, f"refused:{action}", model_name, version, "not an approver")
    raise NotAuthorized(f"{_user(actor)} may not {action} {model_name}: approvers are {', '.join(approvers)}")


def _verify_artifact(ws: Workspace, mv: ModelVersion) -> None:
    ws.artifacts.read_verified(mv.artifact_uri, mv.artifact_sha256)


def _switch(session: Session, model_name: str, target: ModelVersion, expected_revision: int | None) -> int | None:
    """Point production at ``target``; returns the previous version id. Conflict when moved meanwhile."""
    alias = session.get(Alias, (model_name, PRODUCTION))
    if alias is None:
        if expected_revision not in (None, 0):
            raise Conflict(f"production of {model_name} changed while you decided")
        session.add(Alias(model_name=model_name, alias=PRODUCTION, model_version_id=target.id or 0))
        return None
    revision = alias.revision if expected_revision is None else expected_revision
    previous = alias.model_version_id
    result = session.execute(
        update(Alias)
        .where(col(Alias.model_name) == model_name, col(Alias.alias) == PRODUCTION, col(Alias.revision) == revision)
        .values(model_version_id=target.id, previous_version_id=previous, revision=revision + 1, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"production of {model_name} changed while you decided; look again and retry")
    if previous != target.id:
        old = session.get(ModelVersion, previous)
        if old is not None:
            old.status = "archived"
            session.add(old)
    return previous


def alias_revision(ws: Workspace, model_name: str) -> int:
    with ws.session() as session:
        alias = session.get(Alias, (model_name, PRODUCTION))
        return alias.revision if alias else 0


def _commit(ws: Workspace, work: Any) -> Any:
    """Run ``work(session)`` in one transaction; a lost race on a unique key is a Conflict."""
    try:
        with ws.session() as session:
            return work(session)
    except SAIntegrityError:
        raise Conflict("the registry changed while you acted; look again and retry") from None


def promote(ws: Workspace, model_name: str, version: int, reason: str, *, actor: str | None = None,
            action: str = "promote", expected_revision: int | None = None, authorise: bool = True,
            details: dict[str, Any] | None = None) -> ModelVersion:
    """Make ``version`` production, after checking its artifact, in one audited transaction."""
    actor = actor or current_actor()
    if authorise:
        check_authorised(ws, actor, action, model_name, version)

    def work(session: Session) -> ModelVersion:
        mv = get_version(session, model_name, version)
        _verify_artifact(ws, mv)
        previous = _switch(session, model_name, mv, expected_revision)
        mv.status = "production"
        session.add(mv)
        for review in session.exec(select(Review).where(Review.candidate_version_id == mv.id, Review.status == "open")):
            review.status, review.decided_at = "approved", utcnow()
            session.add(review)
        prev_version = session.get(ModelVersion, previous).version if previous else None  # type: ignore[union-attr]
        append_audit(session, actor, action, model_name, version, reason,
                     {"previous_version": prev_version, **(details or {})})
        return mv

    return _commit(ws, work)


def reject(ws: Workspace, model_name: str, version: int, reason: str, *, actor: str | None = None,
           authorise: bool = True, details: dict[str, Any] | None = None) -> ModelVersion:
    """Mark a candidate rejected and close its review, with the audit event."""
    actor = actor or current_actor()
    if authorise:
        check_authorised(ws, actor, "reject", model_name, version)

    def work(session: Session) -> ModelVersion:
        mv = get_version(session, model_name, version)
        if mv.status == "production":
            raise Conflict(f"{model_name} v{version} is in production; roll back instead of rejecting it")
        mv.status = "rejected"
        session.add(mv)
        for review in session.exec(select(Review).where(Review.candidate_version_id == mv.id, Review.status == "open")):
            review.status, review.decided_at = "rejected", utcnow()
            session.add(review)
            session.add(ReviewDecision(review_id=review.id or 0, actor=actor, decision="reject", reason=reason))
        append_audit(session, actor, "reject", model_name, version, reason, details)
        return mv

    return _commit(ws, work)


def open_review(ws: Workspace, model_name: str, version: int, reasons: list[str], comparison: dict[str, Any] | None,
                run_id: str | None, *, actor: str | None = None) -> Review:
    """Open (or find) the review of a flagged candidate."""
    actor = actor or current_actor()

    def work(session: Session) -> Review:
        mv = get_version(session, model_name, version)
        existing = session.exec(select(Review).where(Review.candidate_version_id == mv.id)).first()
        if existing is not None:
            return existing
        prod = production_version(session, model_name)
        review = Review(model_name=model_name, candidate_version_id=mv.id or 0,
                        production_version_id=prod.id if prod else None, run_id=run_id, reasons=reasons,
                        comparison=comparison, required_approvals=ws.cfg.review.required_approvals)
        mv.status = "review"
        session.add(mv)
        session.add(review)
        append_audit(session, actor, "review", model_name, version, "; ".join(reasons)[:2000])
        return review

    return _commit(ws, work)


def rollback(ws: Workspace, model_name: str, reason: str, *, to: int | None = None, actor: str | None = None) -> ModelVersion:
    """Return production to ``to`` or, by default, to the version before the current one."""
    actor = actor or current_actor()
    with ws.session() as session:
        alias = session.get(Alias, (model_name, PRODUCTION))
        if alias is None:
            raise NotFound(f"model '{model_name}' has no production version to roll back")
        if to is None:
            if alias.previous_version_id is None:
                raise NotFound(f"model '{model_name}' has no earlier production version")
            target = session.get(ModelVersion, alias.previous_version_id)
            to = target.version  # type: ignore[union-attr]
        revision = alias.revision
    return promote(ws, model_name, to, reason, actor=actor, action="rollback", expected_revision=revision)


def may_act(ws: Workspace, actor: str | None = None) -> tuple[bool, str]:
    """Whether the actor may approve, reject, promote and roll back, and why not (no audit)."""
    actor = actor or current_actor()
    approvers = ws.cfg.review.approvers
    if not approvers or _user(actor) in approvers:
        return True, ""
    return False, f"{_user(actor)} is not an approver ({', '.join(approvers)})"


def open_review_for(session: Session, model_name: str, version: int) -> Review:
    mv = get_version(session, model_name, version)
    review = session.exec(select(Review).where(Review.candidate_version_id == mv.id)).first()
    if review is None:
        raise NotFound(f"{model_name} v{version} has no review")
    if review.status != "open":
        decided = session.exec(select(ReviewDecision).where(ReviewDecision.review_id == review.id)
                               .order_by(col(ReviewDecision.at).desc())).first()
        who = f" by {decided.actor}" if decided else ""
        raise Conflict(f"the review of {model_name} v{version} is already {review.status}{who}")
    return review


def approve(ws: Workspace, model_name: str, version: int, reason: str, *, actor: str | None = None) -> Review:
    """Record an approval; with enough distinct approvers the candidate is promoted in the same transaction."""
    actor = actor or current_actor()
    check_authorised(ws, actor, "approve", model_name, version)

    def work(session: Session) -> Review:
        review = open_review_for(session, model_name, version)
        session.add(ReviewDecision(review_id=review.id or 0, actor=actor, decision="approve", reason=reason))
        session.flush()  # a second vote by the same person breaks the unique key: Conflict
        votes = session.exec(select(ReviewDecision).where(ReviewDecision.review_id == review.id,
                                                          ReviewDecision.decision == "approve")).all()
        append_audit(session, actor, "approve", model_name, version, reason,
                     {"review_id": review.id, "approvals": len(votes), "required": review.required_approvals})
        if len(votes) >= review.required_approvals:
            mv = get_version(session, model_name, version)
            _verify_artifact(ws, mv)
            expected = None
            if review.production_version_id is not None:
                alias = session.get(Alias, (model_name, PRODUCTION))
                if alias is None or alias.model_version_id != review.production_version_id:
                    raise Conflict(f"production of {model_name} changed since this review was opened; "
                                   "compare again before approving")
                expected = alias.revision
            previous = _switch(session, model_name, mv, expected)
            mv.status = "production"
            review.status, review.decided_at = "approved", utcnow()
            session.add_all([mv, review])
            prev_version = session.get(ModelVersion, previous).version if previous else None  # type: ignore[union-attr]
            append_audit(session, actor, "promote", model_name, version, reason,
                         {"review_id": review.id, "previous_version": prev_version,
                          "approvers": sorted({v.actor for v in votes})})
        return review

    return _commit(ws, work)
