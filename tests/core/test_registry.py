"""The registry: promote, reject, review, two-person sign-off, rollback, history, on the real store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import registry_world as world
from sqlmodel import Session, col, select

from keel.core.errors import Conflict, NotAuthorized, NotFound, UsageError
from keel.core.registry import audit
from keel.core.registry import transactions as registry
from keel.core.registry.lineage import history
from keel.core.store.models import Alias, AuditEvent, ModelVersion, Review
from keel.core.store.queries import reviews_page


@pytest.fixture
def ws(keel_home):
    return world.workspace(world.build(keel_home.parent))


def _production(ws) -> list[tuple[int, int]]:
    with Session(ws.engine) as s:
        aliases = [(a.model_version_id, a.revision) for a in s.exec(select(Alias).where(Alias.model_name == "churn"))]
        live = s.exec(select(ModelVersion.version).where(ModelVersion.status == "production")).all()
    assert len(aliases) <= 1 and len(live) == len(aliases), "exactly one production version, alias and status agree"
    return aliases


def _prod_version(ws) -> int | None:
    with Session(ws.engine) as s:
        mv = registry.production_version(s, "churn")
        return mv.version if mv else None


def test_promote_switches_alias_with_its_audit_event(ws):
    registry.promote(ws, "churn", 1, "first model", actor="alice")
    registry.promote(ws, "churn", 2, "better", actor="alice")
    assert _prod_version(ws) == 2 and _production(ws)[0][1] == 2
    with Session(ws.engine) as s:
        events = s.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
        statuses = dict(s.exec(select(ModelVersion.version, ModelVersion.status)).all())
    assert [(e.action, e.version, e.actor) for e in events] == [("promote", 1, "alice"), ("promote", 2, "alice")]
    assert events[1].details["previous_version"] == 1 and events[1].prev_hash == events[0].hash
    assert statuses[1] == "archived" and statuses[2] == "production"
    assert audit.verify(ws.engine).ok


def test_rollback_returns_to_previous_version(ws):
    for v in (1, 2, 3):
        registry.promote(ws, "churn", v, f"v{v}", actor="alice")
    assert registry.rollback(ws, "churn", "v3 misbehaves", actor="bob").model_version.version == 2
    assert registry.rollback(ws, "churn", "v2 too", actor="bob").model_version.version == 1, "a second rollback goes further back"
    with pytest.raises(NotFound):
        registry.rollback(ws, "churn", "nothing before v1", actor="bob")
    assert registry.rollback(ws, "churn", "back to the newest", to=3, actor="bob").model_version.version == 3
    with pytest.raises(Conflict):
        registry.rollback(ws, "churn", "already there", to=3, actor="bob")
    assert _prod_version(ws) == 3
    with Session(ws.engine) as s:
        last = s.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc())).first()
    assert last.action == "rollback" and last.details["from_version"] == 1 and last.reason == "back to the newest"


def test_not_an_approver_is_refused_and_the_refusal_audited(keel_home):
    ws = world.workspace(world.build(keel_home.parent, versions=2, approvers=["carol"]))
    for act in (lambda: registry.promote(ws, "churn", 1, "try", actor="mallory"),
                lambda: registry.rollback(ws, "churn", "try", actor="mallory")):
        with pytest.raises(NotAuthorized, match="approvers are carol"):
            act()
    registry.promote(ws, "churn", 1, "carol may", actor="carol@10.1.2.3")
    with Session(ws.engine) as s:
        actions = [(e.action, e.actor) for e in s.exec(select(AuditEvent).order_by(col(AuditEvent.id)))]
    assert actions == [("refused:promote", "mallory"), ("refused:rollback", "mallory"), ("promote", "carol@10.1.2.3")]
    assert registry.may_act(ws, "mallory")[0] is False and registry.may_act(ws, "carol")[0] is True


def test_two_person_signoff_needs_distinct_approvers(keel_home):
    ws = world.workspace(world.build(keel_home.parent, versions=2, required=2))
    registry.promote(ws, "churn", 1, "first", actor="alice")
    registry.open_review(ws, "churn", 2, ["ambiguous AUC change"], None, None, actor="keel (pipeline)")
    assert registry.approve(ws, "churn", 2, "looks fine", actor="alice").review.status == "open"
    for same_person in ("alice", "alice@192.168.1.9"):
        with pytest.raises(Conflict, match="someone else"):
            registry.approve(ws, "churn", 2, "again", actor=same_person)
    assert _prod_version(ws) == 1, "one approval of two changes nothing"
    review = registry.approve(ws, "churn", 2, "agreed", actor="bob").review
    assert review.status == "approved" and _prod_version(ws) == 2
    with Session(ws.engine) as s:
        promo = s.exec(select(AuditEvent).where(AuditEvent.action == "promote", AuditEvent.version == 2)).one()
    assert promo.details["approvers"] == ["alice", "bob"]
    with pytest.raises(Conflict, match="already approved"):
        registry.approve(ws, "churn", 2, "late", actor="carol")


def test_reject_closes_the_review_and_a_late_approval_conflicts(ws):
    registry.promote(ws, "churn", 1, "first", actor="alice")
    registry.open_review(ws, "churn", 2, ["guard metric worse"], None, None, actor="keel (pipeline)")
    assert [r["candidate_version"] for r in reviews_page(ws.engine)["rows"]] == [2]
    registry.reject(ws, "churn", 2, "accuracy drop is real", actor="bob")
    assert reviews_page(ws.engine)["rows"] == []
    with pytest.raises(Conflict, match="already rejected by bob"):
        registry.approve(ws, "churn", 2, "too late", actor="alice")
    with pytest.raises(Conflict, match="in production"):
        registry.reject(ws, "churn", 1, "cannot reject what serves", actor="bob")
    assert _prod_version(ws) == 1


def test_a_production_change_supersedes_open_reviews_and_late_approvals_conflict(ws):
    registry.promote(ws, "churn", 1, "first", actor="alice")
    registry.open_review(ws, "churn", 3, ["flagged"], None, None, actor="keel (pipeline)")
    registry.promote(ws, "churn", 2, "hotfix", actor="alice")
    with Session(ws.engine) as s:
        review = s.exec(select(Review)).one()
        assert review.status == "superseded", "judged against v1, which no longer serves"
        assert s.exec(select(ModelVersion).where(ModelVersion.version == 3)).one().status == "candidate"
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "review:superseded")).all()
        assert [(e.version, e.actor) for e in events] == [(3, "alice")]
    with pytest.raises(Conflict, match="changed since the review of v3 was opened"):
        registry.approve(ws, "churn", 3, "ok", actor="bob")
    assert _prod_version(ws) == 2
    with Session(ws.engine) as s:
        assert not s.exec(select(AuditEvent).where(AuditEvent.action == "approve")).all()
    assert audit.verify(ws.engine).ok
    registry.promote(ws, "churn", 3, "compared again by hand", actor="alice")  # still promotable by hand
    assert _prod_version(ws) == 3


def test_every_action_needs_a_reason(ws):
    for act in (lambda: registry.promote(ws, "churn", 1, " ", actor="a"),
                lambda: registry.reject(ws, "churn", 1, "", actor="a"),
                lambda: registry.rollback(ws, "churn", "", actor="a"),
                lambda: registry.approve(ws, "churn", 1, "", actor="a")):
        with pytest.raises(UsageError, match="reason"):
            act()


def test_history_answers_what_served_at_a_moment_and_why(ws):
    registry.promote(ws, "churn", 1, "first model", actor="alice")
    between = datetime.now(UTC)
    registry.promote(ws, "churn", 2, "drift in May", actor="alice")
    registry.rollback(ws, "churn", "v2 misfires", actor="bob")
    periods = history(ws.engine, "churn")
    assert [(p["version"], p["action"]) for p in periods] == [(1, "promote"), (2, "promote"), (1, "rollback")]
    assert periods[-1]["until"] is None and periods[0]["until"] == periods[1]["from"]
    then = history(ws.engine, "churn", between)
    assert [(p["version"], p["reason"], p["actor"]) for p in then] == [(1, "first model", "alice")]
    assert history(ws.engine, "churn", datetime(2000, 1, 1)) == []
    assert history(ws.engine, "churn", datetime.now(UTC))[0]["reason"] == "v2 misfires"


def test_an_approval_whose_waiting_run_cannot_be_resumed_stands_and_says_why(ws):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    registry.promote(ws, "churn", 1, "first", actor="alice")
    flow_run_id = world.review_with_a_waiting_run(ws, 2)
    api = f"http://127.0.0.1:{world.closed_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: api}):
        decision = registry.approve(ws, "churn", 2, "slices look fine", actor="bob")
    assert decision.review.status == "approved" and _prod_version(ws) == 2, "the decision is recorded"
    [run] = decision.waiting_runs
    assert run.flow_run_id == flow_run_id and not run.resumed
    assert run.message.startswith(f"decision recorded, but the waiting flow run {flow_run_id} could not be resumed: "
                                  f"the Prefect API at {api} cannot be reached (")
    assert "\n" not in run.message


def test_a_decision_with_no_waiting_run_reports_none(ws):
    registry.promote(ws, "churn", 1, "first", actor="alice")
    registry.open_review(ws, "churn", 2, ["ambiguous AUC change"], None, None, actor="keel (pipeline)")
    assert registry.reject(ws, "churn", 2, "worse on log loss", actor="bob").waiting_runs == ()
    assert registry.promote(ws, "churn", 3, "by hand", actor="alice").waiting_runs == ()


def test_the_sweeper_rejects_only_reviews_open_past_the_timeout(ws):
    from datetime import timedelta

    registry.promote(ws, "churn", 1, "first", actor="alice")
    registry.open_review(ws, "churn", 2, ["churn above the limit"], None, None, actor="keel (pipeline)")
    registry.open_review(ws, "churn", 3, ["churn above the limit"], None, None, actor="keel (pipeline)")
    with Session(ws.engine) as s:  # v2's review opened two hours ago
        review = s.exec(select(Review).join(ModelVersion, col(ModelVersion.id) == Review.candidate_version_id)
                        .where(ModelVersion.version == 2)).one()
        review.created_at = datetime.now(UTC) - timedelta(hours=2)
        s.add(review)
        s.commit()
    decided = registry.expire_reviews(ws, timeout=3600)
    assert [d.model_version.version for d in decided] == [2]
    assert [r["candidate_version"] for r in reviews_page(ws.engine)["rows"]] == [3]
    assert _prod_version(ws) == 1, "nothing is promoted by default"
    with Session(ws.engine) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "reject")).one()
    assert "timed out" in event.reason and "review sweeper" in event.actor
    assert registry.expire_reviews(ws, timeout=3600) == [], "a second sweep finds nothing"
