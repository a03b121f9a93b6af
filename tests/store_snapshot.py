"""What a rerun or a replay must leave unchanged in the store, as one comparable value."""

from __future__ import annotations

from sqlmodel import Session, select

from keel.core.store.models import Alias, AuditEvent, DatasetVersion, ModelVersion, Prediction, Quarantine


def snapshot(engine) -> dict:  # noqa: ANN001
    with Session(engine) as s:
        return {
            "datasets": sorted((d.id, d.kind) for d in s.exec(select(DatasetVersion))),
            "models": sorted((m.model_name, m.version, m.artifact_sha256, m.status) for m in s.exec(select(ModelVersion))),
            "aliases": sorted((a.model_name, a.alias, a.model_version_id) for a in s.exec(select(Alias))),
            "audit": len(list(s.exec(select(AuditEvent)))),
            "predictions": len(list(s.exec(select(Prediction.row_id)))),
            "quarantine": sorted((q.dataset_id, q.row_index, q.replayed) for q in s.exec(select(Quarantine))),
        }
