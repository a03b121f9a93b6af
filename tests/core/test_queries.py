"""Read queries page through the store and cap their counts ("500 of >500")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from keel.core.store import queries
from keel.core.store.models import Alert, MetricPoint, PipelineRun


def _fill(engine, n: int) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"id": f"run-{i:05d}", "model_name": "m", "source": f"/data/batch-{i:05d}.parquet", "flow": "run_pipeline",
             "status": "quarantined" if i % 50 == 0 else "completed", "decision": "kept",
             "summary": {"drift": {"drifted": ["a"] * (i % 3)}, "metrics": {"roc_auc": 0.7}},
             "started_at": t0 + timedelta(minutes=i)} for i in range(n)]
    with engine.begin() as conn:
        conn.execute(insert(PipelineRun), rows)


def test_runs_page_newest_first_with_capped_count(keel_home):
    from keel.core.workspace import open_store

    engine = open_store()
    _fill(engine, 700)
    first = queries.runs_page(engine, limit=100)
    assert [r["run_id"] for r in first["rows"][:2]] == ["run-00699", "run-00698"]
    assert (first["total"], first["more"]) == (500, True)
    assert first["rows"][1]["drifted"] == 698 % 3 and first["rows"][0]["batch"] == "batch-00699.parquet"
    last = queries.runs_page(engine, limit=100, offset=600)
    assert len(last["rows"]) == 100 and last["rows"][-1]["run_id"] == "run-00000"
    assert (last["total"], last["more"]) == (700, False)
    filtered = queries.runs_page(engine, text="quarantined", limit=100)
    assert (filtered["total"], filtered["more"]) == (14, False)
    assert all(r["status"] == "quarantined" for r in filtered["rows"])
    assert len(queries.list_runs(engine, "m", 5)) == 5  # the CLI's call still works


def test_empty_store_queries_answer_plainly(keel_home):
    from keel.core.workspace import open_store

    engine = open_store()
    assert queries.runs_page(engine)["rows"] == [] and queries.compare(engine) is None
    assert queries.reviews_page(engine)["total"] == 0 and queries.quarantine_page(engine)["rows"] == []
    assert queries.production_state(engine, "m")["production"] is None
    assert queries.metric_history(engine, "m") == [] and queries.list_models(engine) == []


def test_alert_ack_records_who_once(keel_home):
    from keel.core.workspace import open_store

    engine = open_store()
    with engine.begin() as conn:
        conn.execute(insert(Alert), [{"rule": "drift", "model_name": "m", "message": "x", "severity": "warning",
                                      "delivered": False, "created_at": datetime(2026, 1, 1, tzinfo=UTC)}])
    alert_id = queries.alerts_page(engine)["rows"][0]["id"]
    from keel.core.monitoring.alerts import acknowledge

    assert acknowledge(engine, alert_id, "ops", "looked")["already"] is False
    assert acknowledge(engine, alert_id, "bob")["already"] is True
    assert queries.alerts_page(engine)["total"] == 0
    assert queries.alerts_page(engine, open_only=False)["rows"][0]["acked_by"] == "ops"
    assert MetricPoint.__tablename__ == "metric_point"


def test_quarantine_page_counts_whole_batches_and_replays_on_sqlite_and_postgresql(keel_home):
    from postgres_db import fresh_database

    from keel.core.store.engine import get_engine
    from keel.core.store.models import Quarantine
    from keel.core.workspace import open_store

    rows = [{"dataset_id": "d1", "row_index": -1, "reason": "too many bad rows", "whole_batch": True, "replayed": True},
            {"dataset_id": "d1", "row_index": 3, "reason": "humid out of range", "whole_batch": False, "replayed": True},
            {"dataset_id": "d2", "row_index": 5, "reason": "label not in [0, 1]", "whole_batch": False, "replayed": False}]

    def check(engine) -> None:  # noqa: ANN001
        with engine.begin() as conn:
            conn.execute(insert(Quarantine), rows)
        page = {r["dataset_id"]: r for r in queries.quarantine_page(engine)["rows"]}
        assert (page["d1"]["whole_batch"], page["d1"]["rows"], page["d1"]["replayed"]) == (True, 1, 2)
        assert (page["d2"]["whole_batch"], page["d2"]["rows"], page["d2"]["replayed"]) == (False, 1, 0)
        assert page["d1"]["reason"] == "too many bad rows"

    check(open_store())
    with fresh_database("keel_quarantine") as url:  # PostgreSQL has no max() or sum() of booleans
        check(get_engine(url))
