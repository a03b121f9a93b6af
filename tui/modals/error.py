"""The error modal: a KeelError's title over its message (never a traceback)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


def describe(error: BaseException) -> tuple[str, str]:
    """(title, message) for any error: keel's own carry a title; others are named plainly."""
    from keel.core.errors import KeelError, mask_secrets

    if isinstance(error, KeelError):
        return error.title, mask_secrets(error.message)
    first = (str(error).strip().splitlines() or [""])[0]
    return "Unexpected error", mask_secrets(f"{type(error).__name__}: {first}")[:500]


class ErrorModal(ModalScreen[None]):
    AUTO_FOCUS = "#ok"
    BINDINGS = [Binding("escape,enter", "close", "Close", id="error.close", tooltip="Close this message")]

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.error_title, self.message = title, message

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box"):
            yield Static(f"[b]✗ {self.error_title}[/b]", id="error-title", markup=True)
            yield Static(self.message, id="error-message", markup=False)
            yield Button("OK", id="ok")

    def on_button_pressed(self) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
