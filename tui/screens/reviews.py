"""Reviews: the inbox of pending decisions. A approves, X rejects, B rolls the model back, P promotes
the candidate directly; each confirms in a modal and goes through keel.core.registry.transactions."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from keel.tui.format import clip, count_label, short_when, when
from keel.tui.messages import PageLoaded
from keel.tui.modals.confirm import ActionRequest
from keel.tui.screens.base import KeelScreen
from keel.tui.widgets.keys_footer import KeysFooter
from keel.tui.widgets.paged_table import PagedTable
from keel.tui.widgets.status_line import StatusLine

COLUMNS = [("#", 4), ("model", 16), ("cand", 5), ("prod", 5), ("opened", 11), ("votes", 5), ("why", 16)]


class ReviewsScreen(KeelScreen):
    VIEW = "reviews"
    BINDINGS = [
        Binding("A", "approve", "Approve", id="reviews.approve",
                tooltip="Approve the selected candidate (type its version and a reason)"),
        Binding("X", "reject", "Reject", id="reviews.reject",
                tooltip="Reject the selected candidate (type its version and a reason)"),
        Binding("B", "rollback", "Roll back", id="reviews.rollback",
                tooltip="Roll the selected model's production back to its previous version"),
        Binding("P", "promote", "Promote", id="reviews.promote",
                tooltip="Promote the selected candidate to production without waiting for votes"),
        Binding("enter", "open", "Compare", id="reviews.open", tooltip="Compare the candidate with production"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.page: dict[str, Any] = {"rows": [], "total": 0, "more": False, "offset": 0}
        self.states: dict[str, dict[str, Any]] = {}
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield StatusLine("Reviews · loading…", id="status")
        yield PagedTable(COLUMNS, id="reviews-table")
        with VerticalScroll(id="reviews-detail"):
            yield Static("", id="review-reasons")
        yield KeysFooter()

    def reload(self) -> None:
        self.load_reviews()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-reviews")
    def load_reviews(self) -> None:
        from keel.core.store import queries

        engine = self.keel.ctx.engine()
        page = queries.reviews_page(engine, "open", limit=100)
        page["states"] = {m: queries.production_state(engine, m) for m in {r["model"] for r in page["rows"]}}
        self.deliver(PageLoaded("reviews", page))

    def on_page_loaded(self, message: PageLoaded) -> None:
        self.page, self.states, self.loaded = message.page, message.page["states"], True
        rows = [[str(r["review_id"]), clip(r["model"], 16), f"v{r['candidate_version']}",
                 f"v{r['production_version']}" if r["production_version"] else "-", short_when(r["created_at"]),
                 f"{sum(d['decision'] == 'approve' for d in r['decisions'])}/{r['required_approvals']}",
                 clip((r["reasons"] or ["-"])[0], 40)] for r in self.page["rows"]]
        table = self.query_one(PagedTable)
        table.show(rows, self.page["rows"])
        self.show_reasons(table.current)
        self.show_status()
        self.refresh_bindings()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_reasons(self.query_one(PagedTable).current)
        self.refresh_bindings()

    def show_reasons(self, review: dict[str, Any] | None) -> None:
        box = self.query_one("#review-reasons", Static)
        if review is None:
            box.update("No pending reviews. Flagged candidates appear here.")
            return
        state = self.states.get(review["model"], {})
        lines = [f"Review #{review['review_id']} of {review['model']} v{review['candidate_version']}, opened "
                 f"{when(review['created_at'])}; production v{state.get('production') or '-'}"
                 f" (rollback target v{state.get('previous') or '-'})",
                 *[f"• {r}" for r in review["reasons"]]]
        if review["decisions"]:
            lines.append("votes: " + ", ".join(f"{d['actor']}:{d['decision']}" for d in review["decisions"]))
        box.update("\n".join(lines))

    def status_parts(self) -> list[str]:
        if not self.loaded:
            return ["Reviews", "loading…"]
        p = self.page
        return ["Reviews", f"open {count_label(p['offset'], len(p['rows']), p['total'], p['more'])}"]

    def can(self, action: str) -> bool:
        review = self.query_one(PagedTable).current if self.loaded else None
        if review is None:
            return False
        if action == "rollback":
            return bool(self.states.get(review["model"], {}).get("previous"))
        return action in ("approve", "reject", "promote")

    def _request(self, kind: str) -> None:
        review = self.query_one(PagedTable).current
        if review is None:
            return
        state = self.states.get(review["model"], {})
        if kind == "rollback":
            self.ask(ActionRequest("rollback", review["model"], int(state["previous"]),
                                   f"production v{state.get('production')} goes back to v{state['previous']}"))
            return
        self.ask(ActionRequest(kind, review["model"], review["candidate_version"],
                               f"candidate v{review['candidate_version']}, production v{review['production_version'] or '-'}: "
                               f"{(review['reasons'] or ['-'])[0]}"))

    def action_approve(self) -> None:
        self._request("approve")

    def action_reject(self) -> None:
        self._request("reject")

    def action_rollback(self) -> None:
        self._request("rollback")

    def action_promote(self) -> None:
        self._request("promote")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        review = self.query_one(PagedTable).current
        if review:
            from keel.tui.screens.compare import CompareScreen

            self.app.push_screen(CompareScreen(review["model"], review["candidate_version"]))
