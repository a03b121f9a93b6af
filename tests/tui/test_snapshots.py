"""SVG snapshots of the main screens at 80x24 on the fixed, seeded store (pytest-textual-snapshot).

Update after a deliberate change with: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

from keel.tui.app import KeelApp
from tests.tui.helpers import settled, until


def _after(*keys: str):  # noqa: ANN202
    async def run_before(pilot) -> None:  # noqa: ANN001
        app = pilot.app

        async def ready() -> None:
            await until(pilot, lambda: getattr(app.screen, "loaded", True) and app.ctx.allowed is not None)
            await settled(pilot)

        await ready()
        for key in keys:
            await pilot.press(key)
            await ready()
        await pilot.pause(0.2)  # let the footer and status line repaint after the last message
        await settled(pilot)
        await pilot.pause()

    return run_before


def test_snapshot_runs(store, snap_compare):
    assert snap_compare(KeelApp(store(), refresh=0), run_before=_after())


def test_snapshot_run_detail(store, snap_compare):
    assert snap_compare(KeelApp(store(), refresh=0), run_before=_after("enter"))


def test_snapshot_compare(store, snap_compare):
    assert snap_compare(KeelApp(store(), refresh=0), run_before=_after("3"))


def test_snapshot_reviews(store, snap_compare):
    assert snap_compare(KeelApp(store(), refresh=0), run_before=_after("4"))


def test_snapshot_confirm_modal(store, snap_compare):
    assert snap_compare(KeelApp(store(), refresh=0), run_before=_after("4", "A"))


def test_snapshot_runs_no_color_non_approver(store, snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = KeelApp(store(["alice"]), read_only=True, refresh=0)
    assert snap_compare(app, run_before=_after("4"))
