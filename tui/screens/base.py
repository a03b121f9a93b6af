"""The base of every keel screen: workers that report back as messages, guarded actions, a status line.

Subclasses implement ``reload`` (start their load workers) and ``can`` (whether an action has
something to act on). Every store call runs in a thread worker; errors reach the one handler on the
App, which shows them in the error modal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from keel.tui.messages import ActionDone
from keel.tui.modals.confirm import ActionRequest, ConfirmModal
from keel.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from keel.tui.app import KeelApp

GUARDED = ("approve", "reject", "rollback", "promote", "ack", "replay")


class KeelScreen(Screen[None]):
    VIEW: ClassVar[str] = ""
    BINDINGS = [
        Binding("escape", "back", "Back", id="screen.back", tooltip="Cancel a slow query, close a filter, or go back"),
        Binding("r", "reload", "Refresh", id="screen.refresh", tooltip="Read the store again now"),
    ]

    @property
    def keel(self) -> KeelApp:
        return self.app  # type: ignore[return-value]

    # --- loading --------------------------------------------------------------------------------

    def reload(self) -> None:  # pragma: no cover - every screen overrides
        """Start the workers that read what this screen shows."""

    def on_screen_resume(self) -> None:
        self.reload()
        self.show_status()

    def action_reload(self) -> None:
        self.reload()

    def deliver(self, message: Any) -> None:
        """Post a worker's result unless the worker was cancelled meanwhile."""
        worker = get_current_worker()
        if not worker.is_cancelled:
            self.post_message(message)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.keel.report_worker(event)

    def action_back(self) -> None:
        busy = [w for w in self.workers if w.group.startswith("load") and w.state == WorkerState.RUNNING]
        if busy:
            for worker in busy:
                worker.cancel()
            self.notify("query cancelled", timeout=2)
            return
        if self.close_overlay():
            return
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def close_overlay(self) -> bool:
        """Close a filter or similar; True when something was closed."""
        return False

    # --- status ---------------------------------------------------------------------------------

    def status_parts(self) -> list[str]:
        return []

    def show_status(self) -> None:
        ctx = self.keel.ctx
        rights = "" if ctx.can_act else (ctx.why if ctx.allowed is not None or ctx.read_only else "")
        for line in self.query(StatusLine):
            line.set(*self.status_parts(), rights)
            break

    # --- guarded actions ------------------------------------------------------------------------

    def can(self, action: str) -> bool:
        """Whether the screen has something for ``action`` to act on (a pending review, a version)."""
        return False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in GUARDED:
            return True if self.keel.ctx.can_act and self.can(action) else None
        return True

    def ask(self, request: ActionRequest) -> None:
        """Confirm in the modal (focus on Cancel), then act through keel.core.registry.transactions in a worker."""

        def done(reason: str | None) -> None:
            if reason:
                self.act(request, reason)

        self.app.push_screen(ConfirmModal(request), done)

    @work(thread=True, exclusive=True, exit_on_error=False, group="action")
    def act(self, request: ActionRequest, reason: str) -> None:
        from keel.core.registry import transactions as registry
        ws = self.keel.ctx.workspace()
        kind, model, version = request.kind, request.model, request.version
        if kind == "approve":
            decision = registry.approve(ws, model, version, reason)
            text = (f"approved {model} v{version}: now in production" if decision.review.status == "approved"
                    else f"approval of {model} v{version} recorded; more approvals needed")
        elif kind == "reject":
            decision = registry.reject(ws, model, version, reason)
            text = f"rejected {model} v{version}"
        elif kind == "rollback":
            decision = registry.rollback(ws, model, reason, to=version)
            text = f"rolled {model} back to v{version}"
        elif kind == "promote":
            decision = registry.promote(ws, model, version, reason)
            text = f"promoted {model} v{version} to production"
        else:  # pragma: no cover
            raise ValueError(kind)
        runs = decision.waiting_runs
        self.post_message(ActionDone(text, notes=tuple(r.message for r in runs if r.resumed),
                                     warnings=tuple(r.message for r in runs if not r.resumed)))

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.text, title="Done", timeout=4)
        for note in message.notes:
            self.notify(note, title="Pipeline run", timeout=6)
        for warning in message.warnings:  # the decision stands; the operator must know the run did not resume
            self.notify(warning, title="Pipeline run not resumed", severity="warning", timeout=15)
        self.reload()
