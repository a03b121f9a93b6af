"""Pilot helpers: wait for workers to land instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.pilot import Pilot


async def until(pilot: Pilot, condition: Callable[[], object], timeout: float = 15.0) -> None:
    """Pause the pilot until ``condition()`` is truthy (workers finished, screen updated)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {getattr(condition, '__name__', condition)}")
        await pilot.pause(0.02)
    await pilot.pause()


async def settled(pilot: Pilot) -> None:
    """Wait until no worker of the app or its screens is running."""
    app = pilot.app

    def idle() -> bool:
        return all(not w.is_running for w in app.workers)

    await until(pilot, idle)


def screen_text(app) -> str:  # noqa: ANN001
    """The current screen as plain text (what a README capture shows)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None,
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines())
