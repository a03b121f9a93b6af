"""scan_inbox: start one run_pipeline run for the next new batch of a model, on a schedule.

A model's batches run one at a time, in the inbox order (batch time, then arrival, then name): a scan
starts the next new batch only when no run of the model is scheduled, running or waiting in Prefect.
Each start carries the batch's content hash in its idempotency key, so two scans never start the same
batch twice; a run that crashed or failed is started again (a new attempt) by a later scan, at most
MAX_ATTEMPTS times. A run whose heartbeats stopped (its process died) is set Crashed by the scan first
(keel.flows.zombies).
"""

from __future__ import annotations

from typing import Any

from keel.flows.settings import configure_prefect

configure_prefect()  # before Prefect: a worker loads this file by path in a fresh interpreter

from prefect import flow, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment

from keel.core.pipeline.inbox import new_batches
from keel.flows.workspace import open_workspace
from keel.flows.zombies import crash_silent_runs

ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
ENDED_BADLY = [StateType.CRASHED, StateType.FAILED, StateType.CANCELLED]
MAX_ATTEMPTS = 3


def model_tag(model: str) -> str:
    return f"keel-model:{model}"


def batch_tag(sha256: str) -> str:
    return f"keel-batch:{sha256[:16]}"


def _count(tags: list[str], states: list[StateType]) -> int:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=tags), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))))
    return len(runs)


@flow(name="scan_inbox", log_prints=False, validate_parameters=False)
def scan_inbox(inbox: str, config: str = "keel.toml", home: str | None = None,
               deployment: str = "run_pipeline/run-pipeline", crash_after: int = 90) -> dict[str, Any]:
    """Start a run_pipeline run for the model's next new batch in `inbox` (a folder or an fsspec URL).
    A run whose heartbeats stopped for `crash_after` seconds is set Crashed and its batch started again."""
    ws = open_workspace(config, home)
    model = ws.cfg.model
    crashed = crash_silent_runs([model_tag(model)], crash_after)
    pending = new_batches(ws, inbox)
    out: dict[str, Any] = {"model": model, "new": [b.path for b in pending], "started": None, "waiting_on": None,
                           "crashed": crashed}
    if not pending:
        return out
    if _count([model_tag(model)], ACTIVE):  # one at a time: the model's current run finishes first
        out["waiting_on"] = "a run of this model is scheduled, running or waiting"
        return out
    batch = pending[0]
    attempt = _count([model_tag(model), batch_tag(batch.sha256)], ENDED_BADLY) + 1
    if attempt > MAX_ATTEMPTS:
        out["waiting_on"] = f"{batch.path} ended badly {MAX_ATTEMPTS} times: see keel runs"
        return out
    run = run_deployment(deployment, parameters={"batch": batch.path, "config": ws.config_path and str(
        ws.config_path) or config, "home": home}, timeout=0, as_subflow=False,
        idempotency_key=f"keel:{model}:{batch.sha256}:{attempt}", tags=[model_tag(model), batch_tag(batch.sha256)])
    out["started"] = {"batch": batch.path, "sha256": batch.sha256, "attempt": attempt, "flow_run_id": str(run.id)}
    return out
