"""Runs: every pipeline run, newest first, paged through the store; `/` filters, enter opens one."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input

from keel.tui.format import STATUS_STYLE, clip, count_label, num, short_when
from keel.tui.messages import PageLoaded
from keel.tui.screens.base import KeelScreen
from keel.tui.widgets.keys_footer import KeysFooter
from keel.tui.widgets.paged_table import PagedTable
from keel.tui.widgets.status_line import StatusLine

PAGE = 100
COLUMNS = [("started", 11), ("batch", 22), ("status", 11), ("drift", 5), ("auc", 5), ("decision", 11)]


def styled(value: str | None) -> Text:
    text = value or "-"
    return Text(text, style=STATUS_STYLE.get(text, ""))


class RunsScreen(KeelScreen):
    VIEW = "runs"
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="runs.filter", tooltip="Filter runs by batch, status, decision or run id"),
        Binding("enter", "open", "Open", id="runs.open", tooltip="Open the selected run"),
        Binding("right_square_bracket", "page(1)", "Next page", id="runs.next", tooltip="Next page of runs"),
        Binding("left_square_bracket", "page(-1)", "Prev page", id="runs.prev", tooltip="Previous page of runs"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.page_offset = 0
        self.filter_text = ""
        self.page: dict[str, Any] = {"rows": [], "total": 0, "more": False, "offset": 0}
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield StatusLine("Runs · loading…", id="status")
        yield PagedTable(COLUMNS, id="runs-table")
        yield Input(placeholder="filter: batch, status, decision, run id (enter applies, esc clears)",
                    id="runs-filter", classes="filter")
        yield KeysFooter()

    def reload(self) -> None:
        self.load_runs(self.page_offset, self.filter_text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-runs")
    def load_runs(self, offset: int, text: str) -> None:
        from keel.core.store import fastread

        page = None
        db = fastread.sqlite_path(fastread.store_url(self.keel.ctx.config_path))
        if db is not None:  # the embedded store: no ORM import on the way to the first screen
            page = fastread.runs_page(db, limit=PAGE, offset=offset, text=text or None)
        if page is None:
            from keel.core.store import queries

            page = queries.runs_page(self.keel.ctx.engine(), limit=PAGE, offset=offset, text=text or None)
        self.deliver(PageLoaded("runs", page))

    def on_page_loaded(self, message: PageLoaded) -> None:
        self.page = message.page
        rows = [[short_when(r["started_at"]), clip(r["batch"], 22), styled(r["status"]), str(r["drifted"]),
                 num((r["metrics"] or {}).get("roc_auc")), styled(r["decision"])] for r in self.page["rows"]]
        self.query_one(PagedTable).show(rows, [r["run_id"] for r in self.page["rows"]])
        self.loaded = True
        self.show_status()
        self.call_after_refresh(self.keel.start_rights)  # once this page is painted

    def status_parts(self) -> list[str]:
        p = self.page
        return ["Runs", f"{count_label(p['offset'], len(p['rows']), p['total'], p['more'])}" if self.loaded
                else "loading…", f"filter: {self.filter_text}" if self.filter_text else ""]

    def action_page(self, step: int) -> None:
        new = max(0, self.page_offset + step * PAGE)
        if step > 0 and len(self.page["rows"]) < PAGE:
            return
        if new != self.page_offset:
            self.page_offset = new
            self.reload()

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        self.page_offset = 0
        if not self.filter_text:
            event.input.remove_class("shown")
        self.query_one(PagedTable).focus()
        self.reload()

    def close_overlay(self) -> bool:
        box = self.query_one("#runs-filter", Input)
        if box.has_class("shown") or self.filter_text:
            box.value = ""
            box.remove_class("shown")
            self.query_one(PagedTable).focus()
            if self.filter_text:
                self.filter_text, self.page_offset = "", 0
                self.reload()
            return True
        return False

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        run_id = self.query_one(PagedTable).current
        if run_id:
            from keel.tui.screens.run_detail import RunDetailScreen

            self.app.push_screen(RunDetailScreen(run_id))
