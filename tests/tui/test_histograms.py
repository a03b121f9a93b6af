"""Run detail draws each feature's reference and current shares as block sparklines."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from keel.tui.app import KeelApp
from keel.tui.format import sparkline
from keel.tui.screens.run_detail import RunDetailScreen, render_run
from tests.tui.helpers import settled, until

pytestmark = pytest.mark.anyio


def test_sparkline_heights_on_one_scale_and_zero_as_a_dot():
    assert sparkline([0.1] * 10, 0.1) == "█" * 10
    assert sparkline([0.0, 0.05, 0.1], 0.1) == "·▅█"
    assert sparkline([0.25, 0.5]) == "▅█"  # half the top: the middle of eight heights
    assert sparkline([]) == sparkline(None) == "-"


def _text(renderable) -> str:  # noqa: ANN001
    console = Console(width=80, color_system=None, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


async def test_run_detail_shows_reference_and_current_histograms_per_feature(store):
    app = KeelApp(store(), refresh=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: getattr(app.screen, "loaded", True) and app.ctx.allowed is not None)
        await settled(pilot)
        await pilot.press("enter")  # the newest run: the batch whose spend drifted
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.detail is not None)
        detail = app.screen.detail
    text = _text(render_run(detail))
    assert "Reference vs current" in text
    lines = {line.split()[0]: line for line in text.splitlines() if "ref deciles" in line or "basic" in line}
    assert set(lines) >= {"spend", "tenure", "plan"}
    spend = lines["spend"].split()
    ref, cur = spend[1], spend[2]
    assert len(ref) == len(cur) == 10 and len(set(ref)) == 1, "reference deciles: ten equal bars"
    assert cur[-1] == "█" and cur[0] in "▁▂", "spend shifted up: the current mass sits in the top bins"
    assert "basic, plus, pro" in lines["plan"]
