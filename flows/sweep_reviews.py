"""sweep_reviews: reject reviews left open past `[review] timeout`, resuming any run that waits on one."""

from __future__ import annotations

from typing import Any

from keel.flows.settings import configure_prefect

configure_prefect()  # before Prefect: a worker loads this file by path in a fresh interpreter

from prefect import flow

from keel.core.registry import transactions as registry
from keel.flows.workspace import open_workspace


@flow(name="sweep_reviews", log_prints=False, validate_parameters=False)
def sweep_reviews(config: str = "keel.toml", home: str | None = None) -> list[dict[str, Any]]:
    """Reject the model's reviews older than [review] timeout; nothing is ever promoted by default."""
    ws = open_workspace(config, home)
    return [{"version": d.model_version.version, "waiting_runs": [w.message for w in d.waiting_runs]}
            for d in registry.expire_reviews(ws, ws.cfg.review.timeout)]
