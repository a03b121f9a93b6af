"""Resuming a pipeline run that waits for its review, with the decision as its input."""

from __future__ import annotations

from sqlmodel import select

from keel.core.actor import current_actor, user_of  # noqa: F401  (current_actor is re-exported)
from keel.core.registry.audit import GENESIS, event_hash  # noqa: F401  (re-exported: the chain's public names)
from keel.core.store.models import (
    PipelineRun,
    Review,
)
from keel.core.workspace import Workspace


def notify_waiting_run(ws: Workspace, version_id: int | None, decision: str, actor: str, reason: str) -> str | None:
    """Resume the paused pipeline run waiting on this candidate's review, with the decision as its input."""
    with ws.session() as session:
        review = session.exec(select(Review).where(Review.candidate_version_id == version_id)).first()
        run = session.get(PipelineRun, review.run_id) if review and review.run_id else None
        if run is None or run.status != "waiting" or not run.flow_run_id:
            return None
        flow_run_id = run.flow_run_id
    import time
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    answer = {"decision": decision, "actor": actor, "reason": reason, "review_id": review.id}  # type: ignore[union-attr]
    for attempt in range(6):  # the run may be between "waiting" and its Paused state: try again shortly
        try:
            resume_flow_run(UUID(flow_run_id), run_input=answer)
            return f"resumed the waiting flow run {flow_run_id}"
        except Exception as exc:  # the store already holds the decision; the run will see it or time out
            error = exc
            if "isn't paused" not in str(exc):
                break
            time.sleep(0.5 * (attempt + 1))
    return f"decision recorded, but the waiting flow run {flow_run_id} could not be resumed: {error}"
