"""R on the alerts view replays a quarantined batch through `keel replay` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keel.tui.app import KeelApp
from keel.tui.modals.confirm import ConfirmModal
from keel.tui.modals.error import ErrorModal
from keel.tui.screens import alerts
from keel.tui.widgets.paged_table import PagedTable
from tests.tui.helpers import screen_text, settled, until

SIZE = (80, 24)
pytestmark = pytest.mark.anyio


async def _alerts(pilot) -> None:  # noqa: ANN001
    app = pilot.app
    await until(pilot, lambda: app.ctx.allowed is not None)
    await pilot.press("5")
    await until(pilot, lambda: getattr(app.screen, "loaded", False))
    await settled(pilot)


class FakeReplay:
    """Stands in for subprocess.run: records the command, answers like `keel replay --json`."""

    def __init__(self, code: int, summary: dict | None, stderr: str = "") -> None:
        self.code, self.summary, self.stderr, self.calls = code, summary, stderr, []

    def __call__(self, argv, **kwargs):  # noqa: ANN001, ANN003
        self.calls.append(argv)
        out = json.dumps(self.summary) if self.summary is not None else ""
        return subprocess.CompletedProcess(argv, self.code, stdout=out, stderr=self.stderr)


def _batch(app) -> dict:  # noqa: ANN001
    return app.screen.query_one("#quarantine-table", PagedTable).current


async def test_replay_is_greyed_out_read_only_without_keel_toml_and_for_a_non_approver(store, monkeypatch):
    fake = FakeReplay(0, {})
    monkeypatch.setattr(alerts.subprocess, "run", fake)
    config = store(["alice"])
    for app in (KeelApp(config, read_only=True, refresh=0), KeelApp(None, refresh=0), KeelApp(config, refresh=0)):
        async with app.run_test(size=SIZE) as pilot:
            await _alerts(pilot)
            assert _batch(app) is not None, "there is a quarantined batch to replay"
            assert app.screen.check_action("replay", ()) is None
            await pilot.press("R")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmModal)
    assert fake.calls == []


async def test_replay_confirms_with_the_id_prefix_then_runs_keel_replay_in_a_subprocess(store, monkeypatch):
    config = store()
    app = KeelApp(config, refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _alerts(pilot)
        batch = _batch(app)
        dataset = batch["dataset_id"]
        fake = FakeReplay(0, {"run_id": "r" * 32, "status": "completed", "decision": "kept",
                              "dataset_version": dataset, "marked_replayed": batch["rows"] + 1})
        monkeypatch.setattr(alerts.subprocess, "run", fake)
        assert app.screen.check_action("replay", ()) is True
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert app.focused is not None and app.focused.id == "cancel", "focus starts on Cancel"
        assert dataset[:8] in screen_text(app)
        await pilot.press("shift+tab")  # Cancel -> the id field (a replay asks no reason)
        assert app.focused.id == "version"
        await pilot.press(*dataset[:7], "enter")  # one character short: nothing happens
        assert isinstance(app.screen, ConfirmModal) and fake.calls == []
        await pilot.press(dataset[7], "enter")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        await settled(pilot)
        assert fake.calls == [[sys.executable, "-m", "keel", "replay", dataset, "--config", str(config.resolve()),
                               "--json"]]
        assert not isinstance(app.screen, ErrorModal)


async def test_replay_quarantined_again_or_failing_shows_the_error_modal(store, monkeypatch):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=SIZE) as pilot:
        await _alerts(pilot)
        dataset = _batch(app)["dataset_id"]
        for fake, title, words in (
            (FakeReplay(3, {"run_id": "x" * 32, "status": "quarantined", "reasons": ["12% of rows break it"]}),
             "Replay quarantined again", "12% of rows break it"),
            (FakeReplay(2, None, "keel: no quarantined batch has a dataset version starting with it\n"),
             "Replay failed", "no quarantined batch"),
        ):
            monkeypatch.setattr(alerts.subprocess, "run", fake)
            await pilot.press("R")
            await pilot.pause()
            await pilot.press("shift+tab", *dataset[:8], "enter")
            await settled(pilot)
            await until(pilot, lambda: isinstance(app.screen, ErrorModal))
            text = screen_text(app)
            assert title in text and words in text, text
            await pilot.press("escape")
            await pilot.pause()
