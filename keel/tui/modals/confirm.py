"""The confirm modal for a production change: focus starts on Cancel; the operator types the version
number and a reason before Confirm does anything."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


@dataclass(frozen=True)
class ActionRequest:
    """What the operator is about to do: ``kind`` is approve, reject, rollback or promote."""

    kind: str
    model: str
    version: int
    summary: str


class ConfirmModal(ModalScreen[str | None]):
    """Returns the reason when confirmed, None when cancelled."""

    AUTO_FOCUS = "#cancel"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm.cancel", tooltip="Close without acting")]

    def __init__(self, request: ActionRequest) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        r = self.request
        with Vertical(id="confirm-box"):
            yield Static(f"[b]{r.kind.upper()}[/b] {r.model} v{r.version}", id="confirm-title")
            yield Static(r.summary, id="confirm-summary")
            yield Label(f"Type the version number ({r.version}) to confirm:")
            yield Input(placeholder="version number", id="version", type="integer")
            yield Label("Reason (required, goes to the audit log):")
            yield Input(placeholder="why", id="reason")
            yield Static("", id="confirm-error")
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(r.kind.capitalize(), id="confirm", variant="error")

    def _check(self) -> str | None:
        version = self.query_one("#version", Input).value.strip()
        reason = self.query_one("#reason", Input).value.strip()
        if version != str(self.request.version):
            return f"type {self.request.version} to confirm (you typed '{version or 'nothing'}')"
        if not reason:
            return "a reason is required"
        return None

    @on(Button.Pressed, "#confirm")
    @on(Input.Submitted)
    def confirm(self, event: Button.Pressed | Input.Submitted) -> None:
        if isinstance(event, Input.Submitted) and event.input.id == "version":
            self.query_one("#reason", Input).focus()
            return
        problem = self._check()
        if problem:
            self.query_one("#confirm-error", Static).update(f"✗ {problem}")
            return
        self.dismiss(self.query_one("#reason", Input).value.strip())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
