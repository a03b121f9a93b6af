"""Monitoring hooks the pipeline calls: label-free estimates after scoring, alert rules after a run.

Filled in by the monitoring work of issue 3; the flow calls these two functions and nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keel.core.workspace import Workspace


def after_scoring(ws: Workspace, dataset_id: str, production: dict[str, Any], scores: np.ndarray,
                  run_id: str) -> dict[str, Any] | None:
    """Label-free performance estimate of the production model on this batch (None when not built)."""
    return None


def after_run(ws: Workspace, run_id: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate alert rules over the finished run; returns the alerts fired."""
    return []
