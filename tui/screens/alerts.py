"""Alerts and quarantine: open alerts (K acknowledges), quarantined batches and their rows with reasons;
R replays the selected batch under the current keel.toml (through `keel replay`, in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from keel.tui.format import clip, count_label, short_when
from keel.tui.messages import ActionDone, DetailLoaded, PageLoaded
from keel.tui.modals.confirm import ActionRequest, ConfirmModal
from keel.tui.screens.base import KeelScreen
from keel.tui.widgets.keys_footer import KeysFooter
from keel.tui.widgets.paged_table import PagedTable
from keel.tui.widgets.status_line import StatusLine

ALERT_COLUMNS = [("when", 11), ("sev", 8), ("rule", 10), ("model", 12), ("message", 27)]
QUARANTINE_COLUMNS = [("when", 11), ("batch", 24), ("rows", 6), ("whole", 5), ("reason", 22)]
PREFIX = 8  # characters of the dataset id the operator types to confirm a replay


class AlertsScreen(KeelScreen):
    VIEW = "alerts"
    BINDINGS = [
        Binding("K", "ack", "Ack", id="alerts.ack", tooltip="Acknowledge the selected alert (records who and when)"),
        Binding("R", "replay", "Replay", id="alerts.replay",
                tooltip="Replay the selected quarantined batch under the current keel.toml (type its id to confirm)"),
        Binding("tab", "app.focus_next", "Next table", show=False, id="alerts.next", tooltip="Switch table"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.alerts: dict[str, Any] = {"rows": [], "total": 0, "more": False, "offset": 0}
        self.batches: dict[str, Any] = {"rows": [], "total": 0, "more": False, "offset": 0}
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield StatusLine("Alerts · loading…", id="status")
        yield Static("Open alerts", classes="section")
        yield PagedTable(ALERT_COLUMNS, id="alerts-table")
        yield Static("Quarantined batches", classes="section")
        yield PagedTable(QUARANTINE_COLUMNS, id="quarantine-table")
        with VerticalScroll(id="quarantine-detail"):
            yield Static("", id="quarantine-rows")
        yield Static("", id="dead-letters")
        yield KeysFooter()

    def reload(self) -> None:
        self.load_all()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-alerts")
    def load_all(self) -> None:
        from keel.core.store import queries

        engine = self.keel.ctx.engine()
        self.deliver(PageLoaded("alerts", {"alerts": queries.alerts_page(engine, limit=100),
                                           "batches": queries.quarantine_page(engine, limit=100),
                                           "failed": queries.dead_letters(engine, limit=20)}))

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-quarantine-rows")
    def load_rows(self, dataset_id: str) -> None:
        from keel.core.store import queries

        self.deliver(DetailLoaded("rows", queries.quarantine_rows(self.keel.ctx.engine(), dataset_id, limit=50)))

    def on_page_loaded(self, message: PageLoaded) -> None:
        self.alerts, self.batches, self.loaded = message.page["alerts"], message.page["batches"], True
        self.query_one("#alerts-table", PagedTable).show(
            [[short_when(a["created_at"]), a["severity"].upper(), clip(a["rule"], 10), clip(a["model"], 12),
              clip(a["message"], 60)] for a in self.alerts["rows"]], [a["id"] for a in self.alerts["rows"]])
        qt = self.query_one("#quarantine-table", PagedTable)
        qt.show([[short_when(b["at"]), clip(b["batch"], 24), str(b["rows"]), "YES" if b["whole_batch"] else "no",
                  clip(b["reason"], 60)] for b in self.batches["rows"]], self.batches["rows"])
        self._rows_for(qt.current)
        failed = message.page["failed"]
        self.query_one("#dead-letters", Static).update(
            "Failed runs: none waiting" if not failed else "Failed runs (keel replay ID runs one again):\n" + "\n".join(
                f"  {short_when(d['failed_at'])} {clip(d['batch'], 24)} at {d['stage']}, {d['attempts']} attempt(s), "
                f"ID {(d['dataset_id'] or d['run_id'])[:12]}: {clip(d['error'] or '-', 50)}" for d in failed))
        self.show_status()
        self.refresh_bindings()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "quarantine-table":
            self._rows_for(self.query_one("#quarantine-table", PagedTable).current)
        self.refresh_bindings()

    def _rows_for(self, batch: dict[str, Any] | None) -> None:
        if batch is None:
            self.query_one("#quarantine-rows", Static).update("No quarantined data.")
            return
        self.load_rows(batch["dataset_id"])

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        page = message.data
        lines = [f"rows {count_label(page['offset'], len(page['rows']), page['total'], page['more'])}"]
        lines += [f"  row {r['row_index']} {r['row_id'] or ''}: {r['reason']}{' (replayed)' if r['replayed'] else ''}"
                  for r in page["rows"]]
        self.query_one("#quarantine-rows", Static).update("\n".join(lines))

    def status_parts(self) -> list[str]:
        if not self.loaded:
            return ["Alerts", "loading…"]
        a, b = self.alerts, self.batches
        return ["Alerts", f"open {count_label(0, len(a['rows']), a['total'], a['more'])}",
                f"quarantined batches {count_label(0, len(b['rows']), b['total'], b['more'])}"]

    def can(self, action: str) -> bool:
        if not self.loaded:
            return False
        if action == "replay":
            return self.query_one("#quarantine-table", PagedTable).current is not None
        return action == "ack" and self.query_one("#alerts-table", PagedTable).current is not None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "ack":  # acknowledging needs a store you may write, not approver rights
            ok = not self.keel.ctx.read_only and self.keel.ctx.config_path is not None
            return True if ok and self.can(action) else None
        return super().check_action(action, parameters)

    def action_ack(self) -> None:
        alert_id = self.query_one("#alerts-table", PagedTable).current
        if alert_id is not None:
            self.ack(alert_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="action")
    def ack(self, alert_id: int) -> None:
        from keel.core.monitoring import alerts
        from keel.core.registry import transactions as registry
        alerts.acknowledge(self.keel.ctx.engine(), alert_id, registry.current_actor(), "acknowledged in keel tui")
        self.post_message(ActionDone(f"alert {alert_id} acknowledged"))

    # --- replay -----------------------------------------------------------------------------------

    def action_replay(self) -> None:
        batch = self.query_one("#quarantine-table", PagedTable).current
        if batch is None:
            return
        from rich.markup import escape

        dataset_id = batch["dataset_id"]
        held = "the whole batch" if batch["whole_batch"] else f"{batch['rows']} row(s)"
        done = f"; {batch['replayed']} row(s) already marked replayed" if batch.get("replayed") else ""
        summary = (f"{escape(batch['batch'])} (dataset {dataset_id[:12]}): {held} held back, "
                   f"{escape(batch['reason'] or '-')}{done}. The whole pipeline runs again on the stored "
                   "copy under the current keel.toml; unchanged, it replays the earlier run.")
        request = ActionRequest("replay", batch["batch"], 0, summary, token=dataset_id[:PREFIX],
                                subject=f"{clip(batch['batch'], 40)} ({dataset_id[:PREFIX]})", needs_reason=False)

        def confirmed(answer: str | None) -> None:
            if answer:
                self.notify(f"replaying {dataset_id[:PREFIX]}: the whole pipeline runs; this can take a while",
                            title="Replay", timeout=4)
                self.replay(dataset_id)

        self.app.push_screen(ConfirmModal(request), confirmed)

    @work(thread=True, exclusive=True, exit_on_error=False, group="action")
    def replay(self, dataset_id: str) -> None:
        """`keel replay` in a subprocess: the pipeline (and Prefect) never load into the TUI."""
        from keel.core.errors import DataContractError, KeelError

        config = self.keel.ctx.config_path
        if config is None:  # pragma: no cover - check_action keeps R off without keel.toml
            raise KeelError("no keel.toml: nothing to replay under", title="Read-only")
        argv = [sys.executable, "-m", "keel", "replay", dataset_id, "--config", str(config.resolve()), "--json"]
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        summary = _summary(proc.stdout)
        if proc.returncode == DataContractError.exit_code and summary:
            reason = (summary.get("reasons") or ["the data contract still fails"])[0]
            raise DataContractError(f"{dataset_id[:PREFIX]} is quarantined again: {reason}",
                                    title="Replay quarantined again")
        if proc.returncode != 0 or summary is None:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            why = lines[-1].removeprefix("keel: ") if lines else f"keel replay exited {proc.returncode}"
            raise KeelError(why, title="Replay failed")
        marked = summary.get("marked_replayed", 0)
        what = f"{marked} quarantine row(s) marked replayed" if marked else "already marked replayed, nothing changed"
        self.post_message(ActionDone(f"replayed {dataset_id[:PREFIX]}: run {summary['run_id'][:8]} "
                                     f"{summary['status']}, decision {summary.get('decision') or '-'}; {what}"))


def _summary(stdout: str) -> dict[str, Any] | None:
    """The run summary `keel replay --json` printed (None when it printed none)."""
    start = stdout.find("{")
    try:
        return json.loads(stdout[start:]) if start >= 0 else None
    except ValueError:
        return None
