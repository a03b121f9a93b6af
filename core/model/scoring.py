"""Batch inference with the production model, outside any flow: every prediction kept with row id and version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from keel.core.errors import DataContractError, NotFound, UsageError, mask_secrets
from keel.core.pipeline import stages as pipeline
from keel.core.registry import transactions as registry
from keel.core.store import records
from keel.core.store.engine import unit_of_work
from keel.core.workspace import Workspace


@unit_of_work
def score_batch(ws: Workspace, path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Score BATCH with production (artifact verified); store the predictions, and write them to ``out``."""
    if out is not None and Path(out).suffix.lower() not in (".parquet", ".csv"):
        raise UsageError(f"{out}: write predictions to a .parquet or .csv file")
    with ws.session() as session:
        mv = registry.production_version(session, ws.cfg.model)
        if mv is None:
            raise NotFound(f"model '{ws.cfg.model}' has no production version to score with")
        registry.verify_artifact(ws, mv)
        ref = pipeline.model_ref(mv)
    ds = pipeline.ingest(ws, str(path))
    run_id = records.start_run(ws, str(path), None, flow="score")
    records.update_run(ws, run_id, batch_id=ds["id"], production_before=ref["id"])
    try:
        contract = pipeline.contract_for(pipeline.load_dataset(ws, ds["id"]), ref, ws.cfg, ws.cfg.contract)
        checked = pipeline.validate_batch(ws, ds["id"], contract, ws.cfg.contract)
        if checked["batch_reason"]:
            records.finish_run(ws, run_id, "quarantined", reasons=[checked["batch_reason"]])
            raise DataContractError(f"batch not scored: {checked['batch_reason']}")
        bad = sorted({i for i, _ in checked["bad"]})
        scores = pipeline.score(ws, ds["id"], ref, bad)
        ids, actual = pipeline.batch_ids(ws, ds["id"], bad, pipeline.spec_of(ref))
        records.record_predictions(ws, ds["id"], ref["id"], ids, scores, actual, ws.cfg.monitor.threshold, run_id)
    except BaseException as exc:
        if not isinstance(exc, DataContractError):
            records.finish_run(ws, run_id, "failed", error=mask_secrets(str(exc))[:2000] or type(exc).__name__)
        raise
    summary = {"run_id": run_id, "model": ws.cfg.model, "model_version": ref["version"], "dataset_version": ds["id"],
               "rows": ds["rows"], "scored": len(ids), "skipped_rows": len(bad), "out": str(out) if out else None}
    # "scored", not "completed": a scoring run must not count as a pipeline run for retraining decisions
    records.finish_run(ws, run_id, "scored", summary=summary, production_after=ref["id"])
    if out is not None:
        frame = pl.DataFrame({"row_id": ids, "score": scores, "label": (scores >= ws.cfg.monitor.threshold).astype(int),
                              "model": ws.cfg.model, "model_version": ref["version"], "dataset_version": ds["id"]})
        if Path(out).suffix.lower() == ".csv":
            frame.write_csv(out)
        else:
            frame.write_parquet(out)
    return summary
