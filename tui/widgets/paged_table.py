"""A row-cursor DataTable that shows one page of the store at a time, with vim keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.binding import Binding
from textual.widgets import DataTable


class PagedTable(DataTable[Any]):
    """Holds only the current page; the screen asks the store for the next one."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="table.down", tooltip="Next row"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up", tooltip="Previous row"),
        Binding("g", "scroll_top", "Top", show=False, id="table.top", tooltip="First row of the page"),
        Binding("G", "scroll_bottom", "Bottom", show=False, id="table.bottom", tooltip="Last row of the page"),
    ]

    def __init__(self, columns: Sequence[tuple[str, int | None]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._spec = list(columns)
        self.keys: list[Any] = []

    def on_mount(self) -> None:
        for label, width in self._spec:
            self.add_column(label, width=width, key=label)

    def show(self, rows: Sequence[Sequence[Any]], keys: Sequence[Any]) -> None:
        """Replace the rows, keeping the cursor on the same row index where possible."""
        row = self.cursor_row
        self.clear()
        self.keys = list(keys)
        self.add_rows(rows)
        if self.keys:
            self.move_cursor(row=min(max(row, 0), len(self.keys) - 1), animate=False)

    @property
    def current(self) -> Any:
        if not self.keys or self.cursor_row < 0 or self.cursor_row >= len(self.keys):
            return None
        return self.keys[self.cursor_row]
