"""`:` jump: type a view's name (prefixes work) and press enter."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input


class JumpModal(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "close", "Close", id="jump.close", tooltip="Close without jumping")]

    def __init__(self, views: list[str]) -> None:
        super().__init__()
        self.views = views

    def compose(self) -> ComposeResult:
        yield Input(placeholder=":" + " | ".join(self.views), id="jump",
                    suggester=SuggestFromList(self.views, case_sensitive=False))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip().lstrip(":").lower()
        match = next((v for v in self.views if v.startswith(text)), None) if text else None
        self.dismiss(match)

    def action_close(self) -> None:
        self.dismiss(None)
