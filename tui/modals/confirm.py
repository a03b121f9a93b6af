"""The confirm modal for a state change: focus starts on Cancel; the operator types the version number
(or, for a replay, the start of the dataset id) and, where the action is audited with one, a reason."""

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
    """What the operator is about to do: ``kind`` is approve, reject, rollback, promote or replay.

    ``token`` replaces the version number as what must be typed (e.g. a dataset id prefix), and
    ``subject`` the "model vN" of the title; ``needs_reason`` False drops the reason field.
    """

    kind: str
    model: str
    version: int
    summary: str
    token: str | None = None
    subject: str | None = None
    needs_reason: bool = True

    @property
    def expected(self) -> str:
        return self.token if self.token is not None else str(self.version)


class ConfirmModal(ModalScreen[str | None]):
    """Returns the reason (or "confirmed" when none is asked for) when confirmed, None when cancelled."""

    AUTO_FOCUS = "#cancel"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm.cancel", tooltip="Close without acting")]

    def __init__(self, request: ActionRequest) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        r = self.request
        with Vertical(id="confirm-box"):
            yield Static(f"[b]{r.kind.upper()}[/b] {r.subject or f'{r.model} v{r.version}'}", id="confirm-title")
            yield Static(r.summary, id="confirm-summary")
            if r.token is None:
                yield Label(f"Type the version number ({r.version}) to confirm:")
                yield Input(placeholder="version number", id="version", type="integer")
            else:
                yield Label(f"Type {r.token} to confirm:")
                yield Input(placeholder=r.token, id="version")
            if r.needs_reason:
                yield Label("Reason (required, goes to the audit log):")
                yield Input(placeholder="why", id="reason")
            yield Static("", id="confirm-error")
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(r.kind.capitalize(), id="confirm", variant="error")

    def _check(self) -> str | None:
        typed = self.query_one("#version", Input).value.strip()
        if typed != self.request.expected:
            return f"type {self.request.expected} to confirm (you typed '{typed or 'nothing'}')"
        if self.request.needs_reason and not self._reason():
            return "a reason is required"
        return None

    def _reason(self) -> str:
        return self.query_one("#reason", Input).value.strip() if self.request.needs_reason else "confirmed"

    @on(Button.Pressed, "#confirm")
    @on(Input.Submitted)
    def confirm(self, event: Button.Pressed | Input.Submitted) -> None:
        if isinstance(event, Input.Submitted) and event.input.id == "version" and self.request.needs_reason:
            self.query_one("#reason", Input).focus()
            return
        problem = self._check()
        if problem:
            self.query_one("#confirm-error", Static).update(f"✗ {problem}")
            return
        self.dismiss(self._reason())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
