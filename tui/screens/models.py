"""Models: versions per model with status and aliases, the production history (who, when, why) and
the lineage of the selected version. P promotes the selected version, B rolls its model back."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from keel.tui.format import STATUS_STYLE, clip, count_label, num, short_when, when
from keel.tui.messages import DetailLoaded, PageLoaded
from keel.tui.modals.confirm import ActionRequest
from keel.tui.screens.base import KeelScreen
from keel.tui.widgets.keys_footer import KeysFooter
from keel.tui.widgets.paged_table import PagedTable
from keel.tui.widgets.status_line import StatusLine

PAGE = 100
COLUMNS = [("model", 18), ("ver", 5), ("status", 10), ("aliases", 10), ("auc", 5), ("created", 11)]


def _dataset(label: str, d: dict[str, Any] | None) -> str:
    if not d:
        return f"{label}: -"
    batches = ", ".join(_name(p["source"]) for p in d.get("parents", [])) or "-"
    return f"{label}: {d['id'][:12]} ({d.get('rows')} rows) from {batches}"


def _name(source: str | None) -> str:
    return source.replace("\\", "/").rsplit("/", 1)[-1] if source else "-"


def render_lineage(lin: dict[str, Any], history: list[dict[str, Any]], state: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [
        Text(f"{lin['model']} v{lin['version']}  {lin['status']}  {' '.join(lin['aliases'])}", style="bold"),
        Text(_dataset("train", lin["train_dataset"])), Text(_dataset("holdout", lin["holdout_dataset"])),
    ]
    run = lin["run"]
    if run:
        parts.append(Text(f"run {run['run_id'][:8]} on {_name(run['source'])} (flow run {(run['flow_run_id'] or '-')[:8]})"))
    parts.append(Text(f"artifact sha256 {lin['artifact']['sha256'][:16]}  params {lin['params_hash'][:12]}  "
                      f"code {lin['code_hash'][:12]}  rounds {lin['num_boost_round']}"))
    if lin["holdout_metrics"]:
        parts.append(Text("holdout: " + "  ".join(f"{k} {num(v)}" for k, v in lin["holdout_metrics"].items()
                                                  if k in ("roc_auc", "accuracy", "f1", "log_loss"))))
    for e in lin["decisions"]:
        parts.append(Text(f"  {when(e['at'])} {e['action']} by {e['actor']}: {clip(e['reason'], 60)}"))
    table = Table(title=f"Production history of {lin['model']} (now v{state.get('production') or '-'}, "
                        f"rollback target v{state.get('previous') or '-'})", title_justify="left",
                  title_style="bold", box=None, show_edge=False, pad_edge=False)
    for col in ("when", "ver", "action", "who", "why"):
        table.add_column(col, no_wrap=True)
    for e in history[:6]:
        table.add_row(short_when(e["at"]), f"v{e['version']}", e["action"], clip(e["actor"], 16), clip(e["reason"], 30))
    return Group(table, Text(""), *parts)


class ModelsScreen(KeelScreen):
    VIEW = "models"
    BINDINGS = [
        Binding("P", "promote", "Promote", id="models.promote",
                tooltip="Promote the selected version to production (type its version and a reason)"),
        Binding("B", "rollback", "Roll back", id="models.rollback",
                tooltip="Roll the selected model back to its previous production version"),
        Binding("enter", "open", "Compare", id="models.open", tooltip="Compare the selected version with production"),
        Binding("right_square_bracket", "page(1)", "Next page", id="models.next", tooltip="Next page of versions"),
        Binding("left_square_bracket", "page(-1)", "Prev page", id="models.prev", tooltip="Previous page of versions"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.page_offset = 0
        self.page: dict[str, Any] = {"rows": [], "total": 0, "more": False, "offset": 0}
        self.state: dict[str, Any] = {}
        self.lineage: dict[str, Any] | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield StatusLine("Models · loading…", id="status")
        yield PagedTable(COLUMNS, id="models-table")
        with VerticalScroll(id="models-detail"):
            yield Static("", id="lineage")
        yield KeysFooter()

    def reload(self) -> None:
        self.load_models(self.page_offset)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-models")
    def load_models(self, offset: int) -> None:
        from keel.core.store import queries

        self.deliver(PageLoaded("models", queries.models_page(self.keel.ctx.engine(), limit=PAGE, offset=offset)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-lineage")
    def load_lineage(self, model: str, version: int) -> None:
        from keel.core.registry.lineage import lineage
        from keel.core.store import queries

        engine = self.keel.ctx.engine()
        self.deliver(DetailLoaded("lineage", {
            "lineage": lineage(engine, model, version),
            "history": queries.production_history(engine, model, limit=20),
            "state": queries.production_state(engine, model)}))

    def on_page_loaded(self, message: PageLoaded) -> None:
        self.page, self.loaded = message.page, True
        rows = [[clip(r["name"], 18), f"v{r['version']}", Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
                 ",".join(r["aliases"]) or "-", num(r["metrics"].get("roc_auc")), short_when(r["created_at"])]
                for r in self.page["rows"]]
        table = self.query_one(PagedTable)
        table.show(rows, [(r["name"], r["version"]) for r in self.page["rows"]])
        self._select()
        self.show_status()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._select()

    def _select(self) -> None:
        current = self.query_one(PagedTable).current
        if current:
            self.load_lineage(*current)

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        d = message.data
        self.lineage, self.state = d["lineage"], d["state"]
        self.query_one("#lineage", Static).update(render_lineage(d["lineage"], d["history"], d["state"]))
        self.refresh_bindings()

    def status_parts(self) -> list[str]:
        if not self.loaded:
            return ["Models", "loading…"]
        p = self.page
        return ["Models", f"versions {count_label(p['offset'], len(p['rows']), p['total'], p['more'])}"]

    def _selected(self) -> tuple[str, int] | None:
        current = self.query_one(PagedTable).current if self.loaded else None
        if current and self.lineage and (self.lineage["model"], self.lineage["version"]) == current:
            return current
        return None

    def can(self, action: str) -> bool:
        selected = self._selected()
        if selected is None:
            return False
        if action == "promote":
            return self.state.get("production") != selected[1]
        if action == "rollback":
            return bool(self.state.get("previous"))
        return False

    def action_promote(self) -> None:
        selected = self._selected()
        if selected:
            self.ask(ActionRequest("promote", selected[0], selected[1],
                                   f"v{selected[1]} replaces production v{self.state.get('production') or '-'}"))

    def action_rollback(self) -> None:
        selected = self._selected()
        if selected and self.state.get("previous"):
            self.ask(ActionRequest("rollback", selected[0], int(self.state["previous"]),
                                   f"production v{self.state.get('production')} goes back to v{self.state['previous']}"))

    def action_page(self, step: int) -> None:
        if step > 0 and len(self.page["rows"]) < PAGE:
            return
        new = max(0, self.page_offset + step * PAGE)
        if new != self.page_offset:
            self.page_offset = new
            self.reload()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        selected = self.query_one(PagedTable).current
        if selected:
            from keel.tui.screens.compare import CompareScreen

            self.app.push_screen(CompareScreen(*selected))
