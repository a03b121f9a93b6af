"""A rerun answered from the store: a batch that already went through under the same keel.toml and the same
keel code is replayed without Prefect.

Such a rerun through the flow would be all cache hits and store nothing but its run and stage rows (it is a
*replay*: keel.core.pipeline.run.ReplayWrites), and its summary would be the first run's, since every stage's
result is a function of the batch's content, the settings and the code. So keel can answer it from the store:
the batch's SHA-256 names its dataset version; the first run that completed it under this configuration
(records.completed_run) and this code (pipeline_run.code_hash, keel.core.pipeline.code.pipeline_digest) holds
the summary and the stages (or, after an upgrade, the newest replay of it through the flow under this
code does). The replay is recorded as the flow would record it: a run row marked as the replay
of the first run, a stage row for each of the first run's stages (cache hits, with the first run's details),
and the close of keel.core.pipeline.run.finish (production now, abandoned killed runs of the batch, no alerts).

Anything else goes through the flow: a batch not seen, or seen under other settings or other code, a URL, a
stored copy or model file that is gone (the flow stores them again).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sqlmodel import col, or_, select

from keel.core.data.batches import sha256_file
from keel.core.pipeline import run as book
from keel.core.pipeline.code import pipeline_digest
from keel.core.pipeline.stages import version_ref
from keel.core.store import records
from keel.core.store.engine import unit_of_work
from keel.core.store.models import DatasetVersion, ModelVersion, PipelineRun, StageRun
from keel.core.workspace import Workspace

_FIELDS = {f.name for f in dataclasses.fields(book.RunSummary)}


def replay_from_store(ws: Workspace, batch: str) -> dict[str, Any] | None:
    """The summary of a replay of `batch` recorded from the store, or None when the flow has to run it."""
    if "://" in batch and not batch.startswith("file://"):
        return None
    path = Path(batch.removeprefix("file://"))
    if not path.is_file() or records.store_missing(ws):
        return None  # the flow's ingest says what is wrong with the file, in one line; a new store is the flow's
    prior = records.completed_run(ws, sha256_file(path))
    if prior is None:
        return None
    found = _made_by_this_code(ws, prior)
    if found is None:
        return None
    source, stage_rows = found
    run_id = records.start_run(ws, batch, None, code_hash=source.code_hash)
    records.update_run(ws, run_id, batch_id=prior.batch_id, production_before=prior.production_before,
                       replay_of=prior.id, model_version_id=source.model_version_id)
    for row in stage_rows:
        records.record_stage(ws, run_id, row.name, row.status, row.status == "completed", 0.0, row.detail)
    summary = book.RunSummary(**{**{k: v for k, v in (source.summary or {}).items() if k in _FIELDS},
                                 "run_id": run_id, "batch": batch, "status": "running", "alerts": None,
                                 "error": None, "replay_of": None})
    plan = book.Plan(version_ref(ws, prior.production_before), prior)
    return book.finish(ws, summary, plan, book.ReplayWrites(ws, run_id, prior), source.status)


@unit_of_work
def _made_by_this_code(ws: Workspace, prior: PipelineRun) -> tuple[PipelineRun, list[StageRun]] | None:
    """The run of the batch whose summary and stages a rerun now would repeat, with its stage rows: the first
    run, or the newest replay of it, that this code made (a replay through the flow after an upgrade recomputed
    every stage under the new code). None when there is none, or the batch's stored copy or the candidate's
    model file is gone."""
    digest = pipeline_digest()
    with ws.session() as session:
        source = session.exec(
            select(PipelineRun).where(
                or_(PipelineRun.id == prior.id, PipelineRun.replay_of == prior.id), PipelineRun.code_hash == digest,
                PipelineRun.config_hash == prior.config_hash, col(PipelineRun.status).in_(("completed", "quarantined")),
            ).order_by(col(PipelineRun.finished_at).desc())
        ).first()
        if source is None or not source.summary:
            return None
        rows = list(session.exec(select(StageRun).where(StageRun.run_id == source.id).order_by(col(StageRun.id))))
        dataset = session.get(DatasetVersion, prior.batch_id)
        model = session.get(ModelVersion, source.model_version_id) if source.model_version_id else None
    if dataset is None or not rows or not ws.artifacts.exists(dataset.artifact_uri):
        return None
    if model is not None and not ws.artifacts.exists(model.artifact_uri):
        return None
    return source, rows
