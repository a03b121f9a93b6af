"""Promote, reject, review and roll back as single transactions, each with its audit event.

The production alias and its audit event commit together or not at all. The alias carries a
revision number: a writer that read an older revision loses with a Conflict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import update
from sqlmodel import Session, col, select

from keel.core.actor import current_actor, user_of  # noqa: F401  (current_actor is re-exported)
from keel.core.actor import may_act as actor_rights
from keel.core.errors import (
    ChecksumMismatch,
    Conflict,
    ModelError,
    NotAuthorized,
    NotFound,
    UsageError,
    lost_race,
    map_exceptions,
)
from keel.core.registry import audit
from keel.core.registry.audit import GENESIS, event_hash  # noqa: F401  (re-exported: the chain's public names)
from keel.core.registry.resume import WaitingRun, notify_waiting_run
from keel.core.store.engine import unit_of_work
from keel.core.store.models import (
    Alias,
    AuditEvent,
    ModelVersion,
    RegistryCommit,
    Review,
    ReviewDecision,
    utcnow,
)
from keel.core.workspace import Workspace

PRODUCTION = "production"
SWITCHES = ("promote", "promote:auto", "rollback")  # audit actions that move the production alias
T = TypeVar("T")


@dataclass(frozen=True)
class Decision:
    """A registry change as committed, and what became of the pipeline runs that waited on it.

    ``waiting_runs`` holds one entry per paused run the change meant to resume; one that could not be
    resumed carries the line the operator must see (the change itself stands).
    """

    model_version: ModelVersion
    review: Review | None = None
    waiting_runs: tuple[WaitingRun, ...] = ()


def _waiting(runs: Iterable[WaitingRun | None]) -> tuple[WaitingRun, ...]:
    return tuple(run for run in runs if run is not None)


def append_audit(session: Session, actor: str, action: str, model_name: str | None, version: int | None,
                 reason: str | None, details: dict[str, Any] | None = None) -> AuditEvent:
    """Add a hash-chained audit event to the session's transaction."""
    return audit.append(session, actor, action, model_name, version, reason, details)


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


def _commit(ws: Workspace, work: Callable[[Session], T], done: Callable[[Session], T]) -> T:
    """Run ``work(session)`` as one write transaction; a lost race is a Conflict.

    On SQLite the transaction takes the write lock first (BEGIN IMMEDIATE), so writers queue and
    the later one sees what the earlier one did; on PostgreSQL the alias row lock and the unique
    keys of the audit chain decide. A store that stays locked or fails is a StoreError naming it.

    The transaction writes a token of its own (registry_commit). When the connection drops after the store
    committed but before its reply came, the unit is tried again, finds its token and returns ``done(session)``
    (what ``work`` made, read back) instead of acting twice: no second audit event, no Conflict with itself.
    """
    return _transaction(ws, work, done, os.urandom(16).hex())  # not uuid4: tests pin the run ids it makes


@unit_of_work
def _transaction(ws: Workspace, work: Callable[[Session], T], done: Callable[[Session], T], token: str) -> T:
    with map_exceptions(lost_race("the registry")), ws.session() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        if session.get(RegistryCommit, token) is not None:  # an earlier try committed; its reply was lost
            return done(session)
        session.add(RegistryCommit(token=token))
        return work(session)


def check_authorised(ws: Workspace, actor: str, action: str, model_name: str, version: int | None) -> None:
    """Refuse (and audit the refusal) when approvers are listed and the actor is not one of them."""
    allowed, why = may_act(ws, actor)
    if allowed:
        return
    _commit(ws, lambda s: append_audit(s, actor, f"refused:{action}", model_name, version, why), lambda s: None)
    approvers = ", ".join(ws.cfg.review.approvers)
    raise NotAuthorized(f"{user_of(actor)} may not {action} {model_name}: approvers are {approvers}")


def may_act(ws: Workspace, actor: str | None = None) -> tuple[bool, str]:
    """Whether the actor may approve, reject, promote and roll back, and why not (no audit)."""
    return actor_rights(ws.cfg.review.approvers, actor)


def verify_artifact(ws: Workspace, mv: ModelVersion) -> None:
    """The model file must still hash to its SHA-256 and load as a LightGBM booster."""
    data = ws.artifacts.read_verified(mv.artifact_uri, mv.artifact_sha256)
    from keel.core.model.train import load_booster

    try:
        load_booster(data.decode())
    except ModelError as exc:  # the bytes verified but LightGBM cannot read them: the artifact is not what it claims
        raise ChecksumMismatch(f"{mv.model_name} v{mv.version}: the model file does not load: {exc}") from exc


_verify_artifact = verify_artifact  # the name the first registry used


@unit_of_work
def _verified(ws: Workspace, model_name: str, version: int) -> str:
    """Check the artifact before the write transaction (loading a model must not hold the lock)."""
    with ws.session() as session:
        mv = get_version(session, model_name, version)
    verify_artifact(ws, mv)
    return mv.artifact_sha256


def _same_artifact(mv: ModelVersion, sha: str) -> None:
    if mv.artifact_sha256 != sha:
        raise Conflict(f"{mv.model_name} v{mv.version} changed its artifact while you acted; look again")


def _switch(session: Session, model_name: str, target: ModelVersion, expected_revision: int | None) -> int | None:
    """Point production at ``target``; returns the previous version id. Conflict when moved meanwhile."""
    alias = session.get(Alias, (model_name, PRODUCTION))
    if alias is None:
        if expected_revision not in (None, 0):
            raise Conflict(f"production of {model_name} changed while you decided")
        session.add(Alias(model_name=model_name, alias=PRODUCTION, model_version_id=target.id or 0))
        session.flush()  # two first promotions at once: the primary key decides
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
    session.expire(alias)
    if previous != target.id:
        old = session.get(ModelVersion, previous)
        if old is not None:
            old.status = "archived"
            session.add(old)
    return previous


def _supersede(session: Session, model_name: str, target: ModelVersion, actor: str) -> list[int]:
    """Close the model's other open reviews: their candidate was judged against a production that is gone.

    Returns the candidates' version ids; each closure is audited. The candidate can still be promoted by hand.
    """
    stale = list(session.exec(select(Review).where(Review.model_name == model_name, Review.status == "open",
                                                   Review.candidate_version_id != target.id)))
    for review in stale:
        review.status, review.decided_at = "superseded", utcnow()
        candidate = session.get(ModelVersion, review.candidate_version_id)
        if candidate is not None and candidate.status == "review":
            candidate.status = "candidate"
            session.add(candidate)
        session.add(review)
        append_audit(session, actor, "review:superseded", model_name, candidate.version if candidate else None,
                     f"production is now v{target.version}; the comparison this review rests on is stale",
                     {"review_id": review.id})
    return [r.candidate_version_id for r in stale]


@unit_of_work
def alias_revision(ws: Workspace, model_name: str) -> int:
    with ws.session() as session:
        alias = session.get(Alias, (model_name, PRODUCTION))
        return alias.revision if alias else 0


def _close_reviews(session: Session, mv: ModelVersion, status: str) -> list[Review]:
    reviews = list(session.exec(select(Review).where(Review.candidate_version_id == mv.id, Review.status == "open")))
    for review in reviews:
        review.status, review.decided_at = status, utcnow()
        session.add(review)
    return reviews


def promote(ws: Workspace, model_name: str, version: int, reason: str, *, actor: str | None = None,
            action: str = "promote", expected_revision: int | None = None, authorise: bool = True,
            details: dict[str, Any] | None = None) -> Decision:
    """Make ``version`` production, after checking its artifact, in one audited transaction."""
    actor = actor or current_actor()
    _need_reason(reason)
    if authorise:
        check_authorised(ws, actor, action, model_name, version)
    sha = _verified(ws, model_name, version)

    def work(session: Session) -> ModelVersion:
        mv = get_version(session, model_name, version)
        _same_artifact(mv, sha)
        previous = _switch(session, model_name, mv, expected_revision)
        mv.status = "production"
        session.add(mv)
        closed = _close_reviews(session, mv, "approved")
        prev_version = session.get(ModelVersion, previous).version if previous else None  # type: ignore[union-attr]
        append_audit(session, actor, action, model_name, version, reason,
                     {"previous_version": prev_version, **({"review_id": closed[0].id} if closed else {}),
                      **(details or {})})
        superseded[:] = _supersede(session, model_name, mv, actor)
        return mv

    superseded: list[int] = []
    mv = _commit(ws, work, lambda session: get_version(session, model_name, version))
    # a manual promotion of a candidate under review also ends a waiting run
    resumed = notify_waiting_run(ws, mv.id, "approve", actor, reason) if action != "promote:auto" else None
    return Decision(mv, None, _waiting([resumed, *_end_waiting(ws, superseded, actor)]))


def _end_waiting(ws: Workspace, candidate_ids: list[int], actor: str) -> list[WaitingRun | None]:
    """Runs waiting on superseded reviews end as rejected, as a timeout would."""
    return [notify_waiting_run(ws, candidate_id, "reject", actor, "superseded: production changed")
            for candidate_id in candidate_ids]


def reject(ws: Workspace, model_name: str, version: int, reason: str, *, actor: str | None = None,
           authorise: bool = True, details: dict[str, Any] | None = None) -> Decision:
    """Mark a candidate rejected and close its review, with the audit event."""
    actor = actor or current_actor()
    _need_reason(reason)
    if authorise:
        check_authorised(ws, actor, "reject", model_name, version)

    def work(session: Session) -> ModelVersion:
        mv = get_version(session, model_name, version)
        if mv.status == "production":
            raise Conflict(f"{model_name} v{version} is in production; roll back instead of rejecting it")
        if mv.status == "rejected":
            raise Conflict(f"{model_name} v{version} is already rejected")
        mv.status = "rejected"
        session.add(mv)
        for review in _close_reviews(session, mv, "rejected"):
            session.add(ReviewDecision(review_id=review.id or 0, actor=actor, decision="reject", reason=reason))
        append_audit(session, actor, "reject", model_name, version, reason, details)
        return mv

    mv = _commit(ws, work, lambda session: get_version(session, model_name, version))
    return Decision(mv, None, _waiting([notify_waiting_run(ws, mv.id, "reject", actor, reason)]))


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
        append_audit(session, actor, "review", model_name, version, "; ".join(reasons)[:2000],
                     {"run_id": run_id} if run_id else None)
        session.flush()
        return review

    def done(session: Session) -> Review:
        review = _review_of(session, model_name, version)
        assert review is not None  # committed by the try whose reply was lost
        return review

    return _commit(ws, work, done)


def production_stack(session: Session, model_name: str) -> list[int]:
    """Versions that served, oldest first, as a stack: promotions push, a rollback pops back to its target."""
    stack: list[int] = []
    events = session.exec(select(AuditEvent).where(AuditEvent.model_name == model_name,
                                                   col(AuditEvent.action).in_(SWITCHES))
                          .order_by(col(AuditEvent.id)))
    for event in events:
        v = event.version
        if v is None or (stack and stack[-1] == v):
            continue
        if event.action == "rollback" and v in stack:
            del stack[stack.index(v) + 1:]
        else:
            stack.append(v)
    return stack


def rollback_target(session: Session, model_name: str, alias: Alias) -> int | None:
    """The version a default rollback returns to: the one that served before the current one."""
    current = session.get(ModelVersion, alias.model_version_id)
    stack = production_stack(session, model_name)
    on_top = bool(stack) and current is not None and stack[-1] == current.version
    if on_top:
        return stack[-2] if len(stack) >= 2 else None
    if alias.previous_version_id is not None:  # history predates the audit chain
        previous = session.get(ModelVersion, alias.previous_version_id)
        return previous.version if previous else None
    return None


@unit_of_work
def rollback(ws: Workspace, model_name: str, reason: str, *, to: int | None = None,
             actor: str | None = None) -> Decision:
    """Return production to ``to`` or, by default, to the version that served before the current one."""
    actor = actor or current_actor()
    _need_reason(reason)
    check_authorised(ws, actor, "rollback", model_name, to)
    with ws.session() as session:
        alias = session.get(Alias, (model_name, PRODUCTION))
        if alias is None:
            raise NotFound(f"model '{model_name}' has no production version to roll back")
        current = session.get(ModelVersion, alias.model_version_id)
        if to is None:
            to = rollback_target(session, model_name, alias)
            if to is None:
                raise NotFound(f"model '{model_name}' has no earlier production version to return to")
        elif current is not None and current.version == to:
            raise Conflict(f"{model_name} v{to} is already in production")
        revision = alias.revision
        from_version = current.version if current else None
    return promote(ws, model_name, to, reason, actor=actor, action="rollback", expected_revision=revision,
                   authorise=False, details={"from_version": from_version})


def _review_of(session: Session, model_name: str, version: int) -> Review | None:
    mv = get_version(session, model_name, version)
    return session.exec(select(Review).where(Review.candidate_version_id == mv.id)).first()


def open_review_for(session: Session, model_name: str, version: int) -> Review:
    review = _review_of(session, model_name, version)
    if review is None:
        raise NotFound(f"{model_name} v{version} has no review")
    if review.status == "superseded":
        raise Conflict(f"production of {model_name} changed since the review of v{version} was opened, so it is "
                       "superseded; compare again, then promote by hand if it should serve")
    if review.status != "open":
        decided = session.exec(select(ReviewDecision).where(ReviewDecision.review_id == review.id)
                               .order_by(col(ReviewDecision.at).desc())).first()
        who = f" by {decided.actor}" if decided else ""
        raise Conflict(f"the review of {model_name} v{version} is already {review.status}{who}")
    return review


def approve(ws: Workspace, model_name: str, version: int, reason: str, *, actor: str | None = None) -> Decision:
    """Record an approval; with enough distinct approvers the candidate is promoted in the same transaction.

    The result's ``review.status`` is ``approved`` once promoted, else still ``open``."""
    actor = actor or current_actor()
    _need_reason(reason)
    check_authorised(ws, actor, "approve", model_name, version)
    sha = _verified(ws, model_name, version)

    def work(session: Session) -> Decision:
        review = open_review_for(session, model_name, version)
        mv = get_version(session, model_name, version)
        voters = {user_of(d.actor) for d in session.exec(select(ReviewDecision).where(
            ReviewDecision.review_id == review.id, ReviewDecision.decision == "approve"))}
        if user_of(actor) in voters:
            raise Conflict(f"{user_of(actor)} already approved {model_name} v{version}; "
                           "a second approval must come from someone else")
        session.add(ReviewDecision(review_id=review.id or 0, actor=actor, decision="approve", reason=reason))
        session.flush()  # a second vote by the same person breaks the unique key: Conflict
        voters.add(user_of(actor))
        append_audit(session, actor, "approve", model_name, version, reason,
                     {"review_id": review.id, "approvals": len(voters), "required": review.required_approvals})
        if len(voters) >= review.required_approvals:
            _same_artifact(mv, sha)
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
                         {"review_id": review.id, "previous_version": prev_version, "approvers": sorted(voters)})
            superseded[:] = _supersede(session, model_name, mv, actor)
        return Decision(mv, review)

    superseded: list[int] = []
    decision = _commit(ws, work, lambda session: Decision(get_version(session, model_name, version),
                                                          _review_of(session, model_name, version)))
    approved = decision.review is not None and decision.review.status == "approved"
    resumed = notify_waiting_run(ws, decision.model_version.id, "approve", actor, reason) if approved else None
    return replace(decision, waiting_runs=_waiting([resumed, *_end_waiting(ws, superseded, actor)]))


def _need_reason(reason: str | None) -> None:
    if not reason or not reason.strip():
        raise UsageError("every registry action needs a reason (--reason TEXT)")


@unit_of_work
def expire_reviews(ws: Workspace, timeout: int, *, now: datetime | None = None) -> list[Decision]:
    """Reject every open review of this model older than ``timeout`` seconds (nothing is promoted by default);
    a run waiting on one is resumed with that decision. What a review sweeper runs on a schedule."""
    cutoff = (now or utcnow()) - timedelta(seconds=timeout)
    with ws.session() as session:
        open_ = session.exec(select(Review).where(Review.model_name == ws.cfg.model, Review.status == "open")).all()
        versions = [(session.get(ModelVersion, r.candidate_version_id), r.created_at) for r in open_
                    if _utc(r.created_at) < cutoff]
    decided = []
    for mv, opened in versions:
        if mv is None:
            continue
        why = f"the review timed out: open since {opened:%Y-%m-%d %H:%M} UTC, over {timeout} s with no decision"
        try:
            decided.append(reject(ws, ws.cfg.model, mv.version, why, actor=f"{current_actor()} (review sweeper)",
                                  authorise=False, details={"timeout": timeout}))
        except Conflict:  # decided meanwhile by a person: theirs stands
            continue
    return decided


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at  # SQLite hands back naive UTC times
