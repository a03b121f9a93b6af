"""The keel terminal UI: the App alone (screens, widgets and modals live in their own modules)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from keel.tui.context import TuiContext
from keel.tui.messages import RightsResolved
from keel.tui.modals.error import ErrorModal, describe
from keel.tui.modals.help import HelpModal
from keel.tui.modals.jump import JumpModal
from keel.tui.screens.base import KeelScreen
from keel.tui.screens.runs import RunsScreen

VIEWS = ["runs", "models", "compare", "reviews", "alerts"]
# Once the first page is painted: the operator's rights at once (the OS user and, with a keel.toml, its approvers),
# then, while the operator reads the page, the ORM warm-up (SQLAlchemy, SQLModel and the engine: about 0.6 s of
# interpreter time, which competed with the first paint when it started earlier).
WARM_AFTER_S = 0.5
# The rights check starts here at the latest, should no first page ever come (a failed or cancelled load).
RIGHTS_AT_LATEST_S = 3.0


# The views not shown first import their screen when first opened, not at start-up.
def _models() -> Screen:
    from keel.tui.screens.models import ModelsScreen

    return ModelsScreen()


def _compare() -> Screen:
    from keel.tui.screens.compare import CompareScreen

    return CompareScreen()


def _reviews() -> Screen:
    from keel.tui.screens.reviews import ReviewsScreen

    return ReviewsScreen()


def _alerts() -> Screen:
    from keel.tui.screens.alerts import AlertsScreen

    return AlertsScreen()


class KeelApp(App[None]):
    """Browse runs and models, compare a candidate with production, and approve, reject or roll back."""

    CSS_PATH = "app.tcss"
    TITLE = "keel"
    MODES: ClassVar = {"runs": RunsScreen, "models": _models, "compare": _compare, "reviews": _reviews,
                       "alerts": _alerts}
    DEFAULT_MODE = "runs"
    BINDINGS = [
        Binding("1", "view('runs')", "Runs", id="view.runs", tooltip="Pipeline runs, newest first"),
        Binding("2", "view('models')", "Models", id="view.models", tooltip="Model versions, history, lineage"),
        Binding("3", "view('compare')", "Compare", id="view.compare", tooltip="Candidate against production"),
        Binding("4", "view('reviews')", "Reviews", id="view.reviews", tooltip="Pending reviews: approve or reject"),
        Binding("5", "view('alerts')", "Alerts", id="view.alerts", tooltip="Open alerts and quarantined data"),
        Binding("question_mark", "help", "Help", id="app.help", tooltip="The keys of this screen"),
        Binding("colon", "jump", "Jump", show=False, id="app.jump", tooltip="Jump to a view by name"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Leave keel tui"),
    ]

    def __init__(self, config_path: str | Path | None = None, *, read_only: bool = False,
                 refresh: float = 10.0) -> None:
        super().__init__()
        self.ctx = TuiContext(Path(config_path) if config_path else None, read_only, refresh)
        self._rights_started = False

    def on_mount(self) -> None:
        # the runs screen starts the rights check once its first page is painted; this is the fallback
        self.set_timer(RIGHTS_AT_LATEST_S, self.start_rights)
        if self.ctx.refresh > 0:
            self.set_interval(self.ctx.refresh, self.auto_refresh, name="auto-refresh")

    def auto_refresh(self) -> None:
        if isinstance(self.screen, KeelScreen):
            self.screen.reload()

    def start_rights(self) -> None:
        """Resolve the operator's rights (once, after the first page is painted), and warm the ORM a little later."""
        if not self._rights_started:
            self._rights_started = True
            self.resolve_rights()
            self.set_timer(WARM_AFTER_S, self.warm_store)

    @work(thread=True, exclusive=True, exit_on_error=False, group="rights")
    def resolve_rights(self) -> None:
        allowed, why, actor = self.ctx.resolve_rights()
        self.post_message(RightsResolved(allowed, why, actor))

    @work(thread=True, exclusive=True, exit_on_error=False, group="warm")
    def warm_store(self) -> None:
        """Import the ORM and open the engine after the first page, before the operator opens anything."""
        self.ctx.engine()

    def on_rights_resolved(self, message: RightsResolved) -> None:
        self.ctx.allowed, self.ctx.why, self.ctx.actor = message.allowed, message.why, message.actor
        self.sub_title = message.actor
        for stack in self._screen_stacks.values():
            for screen in stack:
                if isinstance(screen, KeelScreen):
                    screen.show_status()
                    screen.refresh_bindings()

    # --- the one place worker errors are handled -------------------------------------------------

    def report_worker(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            title, message = describe(event.worker.error)
            self.push_screen(ErrorModal(title, message))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.report_worker(event)

    # --- navigation ------------------------------------------------------------------------------

    def action_view(self, name: str) -> None:
        if name in self.MODES:
            self.switch_mode(name)

    def action_jump(self) -> None:
        self.push_screen(JumpModal(VIEWS), lambda view: view and self.action_view(view))

    def action_help(self) -> None:
        screen = self.screen
        rows, seen = [], set()
        for active in screen.active_bindings.values():  # keel's own keys carry an id; widget internals do not
            b = active.binding
            if not b.id or b.id in seen:
                continue
            seen.add(b.id)
            rows.append((b.key_display or self.get_key_display(b), b.description, b.tooltip, active.enabled))
        rows.sort(key=lambda r: (r[0] in "12345" and len(r[0]) == 1, r[0].lower()))
        why = "" if self.ctx.can_act else self.ctx.why
        self.push_screen(HelpModal(getattr(screen, "VIEW", "") or "keel", rows, why))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for i, view in enumerate(VIEWS, 1):
            yield SystemCommand(f"View: {view}", f"Switch to the {view} view (key {i})",
                                lambda v=view: self.action_view(v))
        yield SystemCommand("Refresh", "Read the store again now", self.auto_refresh)
        yield SystemCommand("Help", "The keys of this screen", self.action_help)
        yield from super().get_system_commands(screen)
