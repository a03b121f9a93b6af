"""One model's decide-train-gate part runs one at a time, on any number of workers: a Prefect global
concurrency limit of one slot per model (made on first use), held from the retrain decision to the
gate's decision being applied, by runs started from a deployment. Its lease is short (LEASE seconds,
renewed while the run lives), so a run whose worker was killed frees the model within about a minute.
An ad-hoc `keel run` takes no slot: on one machine there is nobody to wait for, and a killed `keel run`
must not make the next one wait for its lease."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def lock_name(model: str) -> str:
    return f"keel-model-{model}"


LEASE = 60.0


def deployed() -> bool:
    """Whether this flow run was started from a deployment (by a worker)."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


@contextmanager
def model_lock(model: str) -> Iterator[None]:
    if not deployed():
        yield
        return
    name = lock_name(model)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another run made it meanwhile
                pass
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE):
        yield
