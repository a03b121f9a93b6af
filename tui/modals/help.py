"""Help: the keys of the screen it was opened from, with what each does and whether it is allowed."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpModal(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close", tooltip="Close help"),
                Binding("j,down", "scroll('down')", show=False), Binding("k,up", "scroll('up')", show=False)]

    def __init__(self, title: str, rows: list[tuple[str, str, str, bool]], why: str = "") -> None:
        super().__init__()
        self.title_text, self.rows, self.why = title, rows, why

    def compose(self) -> ComposeResult:
        table = Table(title=f"{self.title_text}: keys", expand=True, box=None, show_header=True)
        table.add_column("key", no_wrap=True)
        table.add_column("does")
        for key, description, tooltip, enabled in self.rows:
            text = tooltip or description
            table.add_row(key, text if enabled else f"{text} (unavailable)")
        with VerticalScroll(id="help-box"):
            yield Static(table)
            if self.why:
                yield Static(f"Actions unavailable: {self.why}", id="help-why", markup=False)

    def action_scroll(self, direction: str) -> None:
        box = self.query_one("#help-box", VerticalScroll)
        box.scroll_down() if direction == "down" else box.scroll_up()

    def action_close(self) -> None:
        self.dismiss(None)
