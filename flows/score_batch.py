"""score_batch: batch inference with the production model, as a deployment (`keel score` runs the same)."""

from __future__ import annotations

from typing import Any

from keel.flows.settings import configure_prefect

configure_prefect()  # before Prefect: a worker loads this file by path in a fresh interpreter

from prefect import flow

from keel.core.model.scoring import score_batch as score
from keel.flows.workspace import open_workspace


@flow(name="score_batch", log_prints=False, validate_parameters=False)
def score_batch(batch: str, config: str = "keel.toml", home: str | None = None, out: str | None = None) -> dict[str, Any]:
    """Score one batch with production (artifact verified); predictions stored with row id and version."""
    return score(open_workspace(config, home), batch, out)
