"""The standard-library runs page gives what the ORM query gives."""

from __future__ import annotations

from keel.core.config import Settings, parse_config
from keel.core.store import fastread, queries
from keel.core.store.records import finish_run, start_run
from keel.core.workspace import Workspace


def test_fast_runs_page_equals_queries_runs_page(keel_home):
    ws = Workspace(parse_config({"model": "m", "target": "y"}), Settings())
    ids = [start_run(ws, f"/data/batch-{i}.csv", None) for i in range(7)]
    finish_run(ws, ids[3], "completed", decision="promoted",
               summary={"drift": {"drifted": ["a", "b"]}, "metrics": {"roc_auc": 0.7}, "model_version": 2})
    db = fastread.sqlite_path(fastread.store_url(None))
    assert db == keel_home.resolve() / "keel.db"
    for kwargs in ({}, {"limit": 3, "offset": 2}, {"text": "batch-3"}, {"text": ids[5][:8]}, {"text": "promoted"}):
        orm = queries.runs_page(ws.engine, **kwargs)
        fast = fastread.runs_page(db, **kwargs)
        assert fast == orm, kwargs
    assert fastread.runs_page(keel_home / "missing.db")["rows"] == []


def test_the_database_file_of_a_sqlite_url_ignores_its_query(tmp_path):
    assert fastread.sqlite_path(f"sqlite:///{tmp_path}/keel.db?timeout=5") == tmp_path / "keel.db"
    assert fastread.sqlite_path("postgresql://keel@db/keel?connect_timeout=5") is None
