"""`[review] wait = true`: a flagged run waits as a paused flow run for the decision taken in keel.

`keel approve` / `keel reject` decide in the store (the one core transaction) and resume the paused
run with the decision as its run input; a timeout rejects through the same core function.
"""

from __future__ import annotations

from typing import Any, Literal

from keel.flows.settings import configure_prefect

configure_prefect()  # before Prefect

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from sqlmodel import select

from keel.core.registry import transactions as registry
from keel.core.store import records
from keel.core.store.engine import unit_of_work
from keel.core.store.models import Review
from keel.core.workspace import Workspace
from keel.flows.locks import deployed


class ReviewAnswer(RunInput):
    """The decision a paused run receives when it is resumed."""

    decision: Literal["approve", "reject"]
    actor: str = ""
    reason: str = ""
    review_id: int | None = None


@unit_of_work
def _review_id(ws: Workspace, version: int) -> int | None:
    with ws.session() as session:
        mv = registry.get_version(session, ws.cfg.model, version)
        review = session.exec(select(Review).where(Review.candidate_version_id == mv.id)).first()
        return review.id if review else None


@unit_of_work
def _state(ws: Workspace, version: int) -> tuple[str, str]:
    with ws.session() as session:
        mv = registry.get_version(session, ws.cfg.model, version)
        review = session.exec(select(Review).where(Review.candidate_version_id == mv.id)).first()
        return (review.status if review else "open"), mv.status


def wait_for_review(ws: Workspace, version: int, run_id: str, decision: dict[str, Any]) -> None:
    """Wait until the candidate's review is decided in keel (or times out, which rejects); updates ``decision``
    in place. A run started from a deployment suspends (its process exits and holds no worker; it is rerun
    from the top on resume, every stage a cache hit, and comes back here to read the decision); an ad-hoc run
    pauses in its process."""
    timeout = ws.cfg.review.timeout
    review_id = _review_id(ws, version)
    answer: ReviewAnswer | None = None
    if _state(ws, version)[0] == "open":  # decided already (before the wait, or while suspended): no wait
        records.update_run(ws, run_id, status="waiting")
        key = f"keel-review-{review_id}"
        try:
            if deployed():
                # no Prefect timeout: the review sweeper rejects a review left open past [review] timeout
                answer = suspend_flow_run(wait_for_input=ReviewAnswer, key=key)
            else:
                answer = pause_flow_run(wait_for_input=ReviewAnswer, key=key, timeout=timeout,
                                        poll_interval=max(1, min(10, timeout // 10)))
        except FlowPauseTimeout:
            answer = None
        records.update_run(ws, run_id, status="running")
    review_status, _ = _state(ws, version)
    if answer is None and review_status == "open":
        why = f"the review timed out after {timeout} s with no decision: nothing is promoted by default"
        registry.reject(ws, ws.cfg.model, version, why, actor=f"{registry.current_actor()} (pipeline)",
                        authorise=False, details={"run_id": run_id, "review_id": review_id, "timeout": timeout})
        decision["outcome"] = "reject"
        decision["reasons"].append(why)
        return
    if review_status == "approved":
        decision["outcome"] = "promote"
    elif review_status == "rejected":
        decision["outcome"] = "reject"
    else:  # resumed outside keel (e.g. the Prefect UI): decisions are taken in keel, so the review stays open
        decision["reasons"].append("resumed without a decision in keel: the review stays open")
        return
    by = f" by {answer.actor}" if answer and answer.actor else ""
    decision["reasons"].append(f"review {review_status}{by}" + (f": {answer.reason}" if answer and answer.reason else ""))
