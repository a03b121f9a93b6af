"""Pilot tests at 80x24: drive the keys, then look at what the store holds."""

from __future__ import annotations

import pytest
from sqlmodel import Session, col, select
from textual.widgets._footer import FooterKey

from keel.core.store.models import Alert, Alias, AuditEvent, ModelVersion, PipelineRun, Review
from keel.tui.app import KeelApp
from keel.tui.modals.confirm import ConfirmModal
from keel.tui.modals.error import ErrorModal
from keel.tui.modals.help import HelpModal
from keel.tui.screens.models import ModelsScreen
from keel.tui.screens.run_detail import RunDetailScreen
from keel.tui.widgets.keys_footer import KeysFooter
from keel.tui.widgets.paged_table import PagedTable
from tests.tui.conftest import me
from tests.tui.helpers import screen_text, settled, until

SIZE = (80, 24)
pytestmark = pytest.mark.anyio


def _engine():
    from keel.core.workspace import open_store

    return open_store()


def _production() -> int | None:
    with Session(_engine()) as s:
        alias = s.get(Alias, ("churn", "production"))
        return s.get(ModelVersion, alias.model_version_id).version if alias else None


def _audit() -> list[tuple[str, str, int | None, str | None]]:
    with Session(_engine()) as s:
        return [(e.actor, e.action, e.version, e.reason) for e in s.exec(select(AuditEvent).order_by(col(AuditEvent.id)))]


async def _ready(pilot) -> None:  # noqa: ANN001
    app = pilot.app
    await until(pilot, lambda: getattr(app.screen, "loaded", True) and app.ctx.allowed is not None)
    await settled(pilot)


async def _view(pilot, key: str) -> None:  # noqa: ANN001
    await pilot.press(key)
    await _ready(pilot)


async def _confirm(pilot, version: str, reason: str) -> None:  # noqa: ANN001
    app = pilot.app
    assert isinstance(app.screen, ConfirmModal)
    assert app.focused is not None and app.focused.id == "cancel", "focus starts on Cancel"
    await pilot.press("shift+tab", "shift+tab")  # Cancel -> reason -> version
    assert app.focused.id == "version"
    await pilot.press(*version, "enter")  # enter moves on to the reason
    await pilot.press(*reason, "enter")
    await pilot.pause()


async def test_runs_newest_first_filter_and_open_a_run(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        table = app.screen.query_one(PagedTable)
        assert table.row_count == 4
        assert [app.screen.page["rows"][i]["batch"] for i in (0, 3)] == ["customers-2026-04.parquet",
                                                                        "customers-2026-01.parquet"]
        assert "Runs · 1-4 of 4" in screen_text(app)
        await pilot.press("slash", *"quarantined", "enter")
        await _ready(pilot)
        assert table.row_count == 1 and "filter: quarantined" in screen_text(app)
        await pilot.press("escape")
        await _ready(pilot)
        assert table.row_count == 4
        await pilot.press("j", "k", "enter")
        await _ready(pilot)
        assert isinstance(app.screen, RunDetailScreen)
        text = screen_text(app)
        assert "00000000-0000-4000-8000-000000000004" in text and "Stages" in text
        detail = app.screen.detail
        assert detail["drift"]["features"] and detail["metric_values"]["roc_auc"] > 0.5
        await pilot.press("escape")
        assert not isinstance(app.screen, RunDetailScreen)


async def test_approve_in_the_tui_moves_production_and_writes_the_audit_event(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "4")
        assert app.screen.check_action("approve", ()) is True
        await pilot.press("A")
        await _confirm(pilot, "3", "better recall; drift understood")
        await _ready(pilot)
        assert not isinstance(app.screen, ConfirmModal)
    assert _production() == 3
    events = _audit()
    assert (me(), "approve", 3, "better recall; drift understood") in events
    assert (me(), "promote", 3, "better recall; drift understood") in events
    with Session(_engine()) as s:
        assert s.exec(select(Review)).one().status == "approved"


async def test_wrong_version_or_no_reason_keeps_the_modal_and_changes_nothing(store):
    app = KeelApp(store(), refresh=0)
    before = _audit()
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "4")
        await pilot.press("A")
        await _confirm(pilot, "2", "oops")
        assert isinstance(app.screen, ConfirmModal)
        assert "type 3 to confirm" in screen_text(app)
        await pilot.press("escape")
        await _ready(pilot)
        assert not isinstance(app.screen, ConfirmModal)
    assert _production() == 2 and _audit() == before


async def test_non_approver_sees_actions_greyed_and_changes_nothing(store):
    app = KeelApp(store(["alice"]), refresh=0)
    before = _audit()
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "4")
        for action in ("approve", "reject", "rollback", "promote"):
            assert app.screen.check_action(action, ()) is None
        assert f"{me()} is not an approver (alice)" in screen_text(app)
        await pilot.press("A", "X", "B", "P")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        await _view(pilot, "2")
        await pilot.press("P", "B")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
    assert _production() == 2 and _audit() == before


async def test_the_store_engine_is_warmed_after_the_first_page_without_a_key_press(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await until(pilot, lambda: app.ctx._engine is not None)  # the first run opened finds the ORM imported


async def test_the_footer_greys_and_restores_keys_when_the_rights_change(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "4")

        def greyed() -> dict[str, bool]:
            keys = app.screen.query_one(KeysFooter).query(FooterKey)
            return {k.action: k.has_class("-disabled") for k in keys if k.action in ("approve", "reject")}

        assert greyed() == {"approve": False, "reject": False}
        app.ctx.allowed = False  # as a non-approver's rights would arrive
        app.screen.refresh_bindings()
        await until(pilot, lambda: greyed()["approve"])
        assert greyed() == {"approve": True, "reject": True}
        app.ctx.allowed = True
        app.screen.refresh_bindings()
        await until(pilot, lambda: not greyed()["approve"])
        assert greyed() == {"approve": False, "reject": False}


async def test_read_only_flag_and_missing_keel_toml_turn_actions_off(store):
    store()
    for app in (KeelApp("keel.toml", read_only=True, refresh=0), KeelApp(None, refresh=0)):
        async with app.run_test(size=SIZE) as pilot:
            await _ready(pilot)
            assert app.screen.query_one(PagedTable).row_count == 4, "browsing works"
            await _view(pilot, "4")
            assert app.screen.check_action("approve", ()) is None
            assert "read-only" in screen_text(app)
    assert _production() == 2


async def test_reject_needs_a_reason_and_records_it(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "4")
        await pilot.press("X")
        await _confirm(pilot, "3", "")
        assert "a reason is required" in screen_text(app)
        await pilot.press(*"worse on log loss", "enter")
        await _ready(pilot)
        assert app.screen.query_one(PagedTable).row_count == 0, "the inbox is empty now"
    assert (me(), "reject", 3, "worse on log loss") in _audit()
    assert _production() == 2


@pytest.mark.slow  # over 5 s (7.6 s measured): a rollback and a promotion through the TUI
async def test_models_rollback_and_promote_a_chosen_version(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "2")
        assert isinstance(app.screen, ModelsScreen)
        await until(pilot, lambda: app.screen.lineage is not None)
        assert "Production history of churn (now v2" in screen_text(app)
        await pilot.press("B")
        assert app.screen.request.version == 1  # type: ignore[attr-defined]
        await _confirm(pilot, "1", "v2 misbehaves in production")
        await _ready(pilot)
        assert _production() == 1
        await until(pilot, lambda: app.screen.state.get("production") == 1)
        await pilot.press("P")  # the cursor is on v3
        await _confirm(pilot, "3", "manual promotion after review meeting")
        await _ready(pilot)
    assert _production() == 3
    actions = [(a, v) for _, a, v, _ in _audit()]
    assert ("rollback", 1) in actions and ("promote", 3) in actions


async def test_conflict_shows_the_error_title_over_the_message(store):
    from keel.core.registry import transactions as registry
    from keel.core.workspace import Workspace

    config = store()
    app = KeelApp(config, refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "4")
        # another operator rolls production back while this one looks at the review
        registry.rollback(Workspace.open(config), "churn", "someone else acted", actor=me())
        await pilot.press("A")
        await _confirm(pilot, "3", "approve on a stale screen")
        await until(pilot, lambda: isinstance(app.screen, ErrorModal))
        text = screen_text(app)
        assert "Conflict" in text and "changed" in text, text
        await pilot.press("escape")
    assert _production() == 1


async def test_alerts_ack_quarantine_rows_help_and_jump(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "5")
        text = screen_text(app)
        assert "Quarantined batches" in text and "tenure outside [0, 120]" in text
        assert "Failed runs: none waiting" in app.screen.query_one("#dead-letters").render().plain
        await pilot.press("K")
        await _ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpModal)
        assert "Acknowledge" in screen_text(app)
        await pilot.press("escape", "colon", *"mod", "enter")
        await _ready(pilot)
        assert isinstance(app.screen, ModelsScreen)
    with Session(_engine()) as s:
        acked = [a for a in s.exec(select(Alert)) if a.acked_by]
    assert len(acked) == 1 and acked[0].acked_by == me()


async def test_auto_refresh_picks_up_a_new_run(store):
    from keel.core.store import records
    from keel.core.workspace import Workspace

    config = store()
    app = KeelApp(config, refresh=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        records.start_run(Workspace.open(config), "/data/customers-2026-05.parquet", None)
        await until(pilot, lambda: app.screen.query_one(PagedTable).row_count == 5)
        assert "customers-2026-05" in screen_text(app)


async def test_compare_shows_the_estimate_against_the_labels_and_why_it_missed(store):
    from keel.core.store import queries

    record = queries.estimate_record(_engine(), "churn")
    assert [r["batch"] for r in record["rows"]] == ["customers-2026-02.parquet", "customers-2026-04.parquet"]
    assert all(r["calibration"] == "holdout" for r in record["rows"]), "each batch was its model's first"
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "3")
        for _ in range(40):
            await pilot.press("j")
        await settled(pilot)
        text = screen_text(app)
        assert "Label-free estimate of accuracy against the labels" in text
        for r in record["rows"]:
            assert f"{100 * r['miss']:+.1f}" in text
            assert ("; ".join(r["why"]) or "within 2 points")[:12] in text, text


async def test_a_waiting_run_that_cannot_be_resumed_is_shown_as_a_warning_after_approve(store, monkeypatch):
    import uuid

    from registry_world import closed_port

    config = store()
    flow_run_id = str(uuid.uuid4())
    with Session(_engine()) as s:  # the run that opened v3's review waits on it, but no Prefect server knows it
        review = s.exec(select(Review)).one()
        run = s.get(PipelineRun, review.run_id)
        run.status, run.flow_run_id = "waiting", flow_run_id
        s.add(run)
        s.commit()
    # the worker thread reads Prefect's settings from the environment unless an earlier test left it a context
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{closed_port()}/api")
    app = KeelApp(config, refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "4")
        await pilot.press("A")
        await _confirm(pilot, "3", "better recall; drift understood")
        await _ready(pilot)
        await until(pilot, lambda: any(n.severity == "warning" for n in app._notifications))
        [warning] = [n for n in app._notifications if n.severity == "warning"]
        assert warning.title == "Pipeline run not resumed"
        assert warning.message.startswith(f"decision recorded, but the waiting flow run {flow_run_id} could not be "
                                          "resumed: the Prefect API")  # cannot be reached, or does not know it
    assert _production() == 3, "the approval stands"


async def test_a_failed_run_shows_as_a_dead_letter_with_its_stage(store):
    from keel.core.store import records
    from keel.core.workspace import Workspace

    config = store()
    ws = Workspace.open(config)
    run = records.start_run(ws, "/data/customers-2026-06.parquet", None)
    records.record_stage(ws, run, "train", "failed", False, 10.0, {"error": "LightGBM failed while training"})
    records.finish_run(ws, run, "failed", error="LightGBM failed while training: out of memory")
    app = KeelApp(config, refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot)
        await _view(pilot, "5")
        text = app.screen.query_one("#dead-letters").render().plain
    assert "customers-2026-06" in text and "at train, 1 attempt(s)" in text and run[:12] in text
