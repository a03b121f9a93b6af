"""Reviews as the operator reads them: candidate, production, reasons, the comparison and the votes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from keel.core.actor import current_actor, user_of  # noqa: F401  (current_actor is re-exported)
from keel.core.registry.audit import GENESIS, event_hash  # noqa: F401  (re-exported: the chain's public names)
from keel.core.store.models import (
    ModelVersion,
    Review,
    ReviewDecision,
)


def list_reviews(engine: Engine, model: str | None = None, status: str | None = "open") -> list[dict[str, Any]]:
    """Reviews with candidate, production, reasons, the comparison and the votes so far, newest first."""
    with Session(engine) as session:
        query = select(Review).order_by(col(Review.created_at).desc())
        if model:
            query = query.where(Review.model_name == model)
        if status:
            query = query.where(Review.status == status)
        out = []
        for review in session.exec(query):
            cand = session.get(ModelVersion, review.candidate_version_id)
            prod = session.get(ModelVersion, review.production_version_id) if review.production_version_id else None
            votes = session.exec(select(ReviewDecision).where(ReviewDecision.review_id == review.id)
                                 .order_by(col(ReviewDecision.at))).all()
            out.append({
                "review_id": review.id, "model": review.model_name, "candidate_version": cand.version if cand else None,
                "production_version": prod.version if prod else None, "status": review.status,
                "reasons": review.reasons or [], "comparison": review.comparison, "run_id": review.run_id,
                "required_approvals": review.required_approvals,
                "decisions": [{"actor": v.actor, "decision": v.decision, "reason": v.reason, "at": v.at} for v in votes],
                "created_at": review.created_at, "decided_at": review.decided_at,
            })
        return out
