"""Operators racing on one model: one production version, an intact chain, losers get Conflict."""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid

import pytest
import registry_world as world
from sqlalchemy import create_engine, text
from sqlmodel import Session, col, select

from keel.core.registry import audit
from keel.core.registry import transactions as registry
from keel.core.registry.lineage import history
from keel.core.store.models import Alias, AuditEvent, ModelVersion, Review

ROLES = [("approve", "ann"), ("approve", "ben"), ("rollback", "cat"), ("rollback", "dan"), ("promote", "eve"),
         ("promote", "fay")]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, keel_home, monkeypatch):
    """The store under test: SQLite under KEEL_HOME, or a fresh schema on the test PostgreSQL."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    base = os.environ.get("KEEL_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("KEEL_TEST_POSTGRES_URL is not set")
    schema = f"keel_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    monkeypatch.setenv("KEEL_DATABASE_URL", f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}")
    yield "postgres"
    from keel.core.store.engine import dispose_engines

    dispose_engines()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.mark.slow  # racing processes, over 10 s
def test_racing_approvals_and_rollbacks_leave_one_consistent_history(store, keel_home):
    config = world.build(keel_home.parent, versions=4)
    ws = world.workspace(config)
    for v in (1, 2):
        registry.promote(ws, "churn", v, f"v{v}", actor="setup")
    registry.open_review(ws, "churn", 3, ["ambiguous"], None, None, actor="keel (pipeline)")
    from keel.core.store.engine import dispose_engines

    dispose_engines()  # no pooled connection crosses into the workers
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(ROLES)), ctx.Queue()
    procs = [ctx.Process(target=world.race_worker, args=(role, actor, str(config), barrier, results))
             for role, actor in ROLES]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    flat = [o for _, _, outs in outcomes for o in outs]
    assert not [o for o in flat if o.startswith("error")], flat
    assert any(o.startswith("conflict") for o in flat), "the race produced no loser: it did not race"
    approvals = [outs[0] for role, _, outs in outcomes if role == "approve"]
    assert sum(o == "ok" for o in approvals) <= 1, "two operators cannot both win one review"

    ws = world.workspace(config)
    with Session(ws.engine) as s:
        aliases = s.exec(select(Alias).where(Alias.model_name == "churn")).all()
        live = s.exec(select(ModelVersion).where(ModelVersion.status == "production")).all()
        switches = s.exec(select(AuditEvent).where(col(AuditEvent.action).in_(registry.SWITCHES))).all()
        review = s.exec(select(Review)).one()
    assert len(aliases) == 1 and len(live) == 1 and live[0].id == aliases[0].model_version_id
    assert aliases[0].revision == len(switches), "every alias change has exactly one audit event"
    assert (review.status == "approved") == ("ok" in approvals)
    assert history(ws.engine, "churn")[-1]["version"] == live[0].version
    check = audit.verify(ws.engine)
    assert check.ok, check.problem
