"""Resuming a pipeline run that waits for its review, with the decision as its input."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import select

from keel.core.actor import current_actor, user_of  # noqa: F401  (current_actor is re-exported)
from keel.core.errors import KeelError, map_exceptions, prefect_errors
from keel.core.errors import reason as reason_of
from keel.core.registry.audit import GENESIS, event_hash  # noqa: F401  (re-exported: the chain's public names)
from keel.core.store.engine import unit_of_work
from keel.core.store.models import (
    PipelineRun,
    Review,
)
from keel.core.workspace import Workspace


@dataclass(frozen=True)
class WaitingRun:
    """A paused pipeline run a decision was meant to resume: whether it was, and a line for the operator."""

    flow_run_id: str
    resumed: bool
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"flow_run_id": self.flow_run_id, "resumed": self.resumed, "message": self.message}


@unit_of_work
def notify_waiting_run(ws: Workspace, version_id: int | None, decision: str, actor: str,
                       reason: str) -> WaitingRun | None:
    """Resume the paused pipeline run waiting on this candidate's review, with the decision as its input.

    None when no run waits. A failure to resume is reported in the result, never raised: the store
    already holds the decision, and the run sees it when it next looks, or times out.
    """
    with ws.session() as session:
        review = session.exec(select(Review).where(Review.candidate_version_id == version_id)).first()
        run = session.get(PipelineRun, review.run_id) if review and review.run_id else None
        if run is None or run.status != "waiting" or not run.flow_run_id:
            return None
        flow_run_id = run.flow_run_id
    import time
    from uuid import UUID

    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import get_current_settings

    mapping = prefect_errors(get_current_settings().api.url, f"flow run {flow_run_id}")
    answer = {"decision": decision, "actor": actor, "reason": reason, "review_id": review.id}  # type: ignore[union-attr]
    for attempt in range(6):  # the run may be between "waiting" and its Paused state: try again shortly
        try:
            with map_exceptions(mapping):
                resume_flow_run(UUID(flow_run_id), run_input=answer)
            return WaitingRun(flow_run_id, True, f"resumed the waiting flow run {flow_run_id}")
        except Exception as exc:  # reported, not raised (see above)
            error = exc
            if not isinstance(exc.__cause__, NotPausedError):
                break
            time.sleep(0.5 * (attempt + 1))
    why = str(error) if isinstance(error, KeelError) else f"{type(error).__name__}: {reason_of(error)}"
    return WaitingRun(flow_run_id, False,
                      f"decision recorded, but the waiting flow run {flow_run_id} could not be resumed: {why}")
