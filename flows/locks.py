"""One model's decide-train-gate part runs one at a time, on any number of workers: a Prefect global
concurrency limit of one slot per model (made on first use), held from the retrain decision to the
gate's decision being applied."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists


def lock_name(model: str) -> str:
    return f"keel-model-{model}"


@contextmanager
def model_lock(model: str) -> Iterator[None]:
    name = lock_name(model)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
    with concurrency(name, occupy=1, strict=True):
        yield
