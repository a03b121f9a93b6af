"""One run: stages with timings and cache hits, the contract and quarantined rows, per-feature drift,
metrics, alerts and the Prefect flow run id."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from keel.tui.format import STATUS_STYLE, clip, num, pval, sparkline, when
from keel.tui.messages import DetailLoaded
from keel.tui.screens.base import KeelScreen
from keel.tui.widgets.keys_footer import KeysFooter
from keel.tui.widgets.status_line import StatusLine


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False,
                  expand=False, show_edge=False)
    for c in columns:
        table.add_column(c, no_wrap=True)
    return table


def _stage_detail(detail: dict[str, Any]) -> str:
    if "reason" in detail:
        return str(detail["reason"])
    if "error" in detail:
        return f"error: {detail['error']}"
    keys = [f"{k}={v}" for k, v in detail.items() if isinstance(v, int | float | bool | str) and k != "sha256"]
    return ", ".join(keys)


def render_run(d: dict[str, Any]) -> RenderableType:
    """The whole run as rich renderables (also used for the README text capture)."""
    head = Table.grid(padding=(0, 1))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    head.add_row("run", d["run_id"])
    head.add_row("flow run", d["flow_run_id"] or ("- (replayed from the store)" if d.get("replay_of")
                                                  else "- (not run under Prefect)"))
    head.add_row("model", f"{d['model']}  batch {d['batch']}  dataset {(d['dataset_version'] or '-')[:12]}")
    head.add_row("status", Text(f"{d['status']}  decision {d['decision'] or '-'}",
                                style=STATUS_STYLE.get(d["status"], "")))
    head.add_row("time", f"{when(d['started_at'], True)} → {when(d['finished_at'], True)}")
    if d.get("replay_of"):
        head.add_row("replay of", d["replay_of"])
    for reason in d["reasons"]:
        head.add_row("why", Text(reason))
    if d.get("error"):
        head.add_row("error", Text(d["error"]))
    parts: list[RenderableType] = [head]

    stages = _table("Stages", "stage", "status", "cache", "ms", "detail")
    for s in d["stages"]:
        stages.add_row(s["name"], s["status"], "HIT" if s["cached"] else "-", f"{s['duration_ms']:.0f}",
                       clip(_stage_detail(s["detail"]), 40))
    parts += [Text(""), stages]

    c, q = d["contract"], d["quarantine"]
    verdict = "FAIL (batch quarantined)" if c.get("batch_reason") else (
        "PASS" if not c.get("bad_rows") else f"PASS with {c.get('bad_rows')} bad rows quarantined")
    contract = Text(f"Contract: {verdict}" if c else "Contract: not checked", style="bold")
    parts += [Text(""), contract]
    if c:
        parts.append(Text(f"rows {c.get('rows')}  bad {c.get('bad_rows')}  share {num(c.get('bad_share'))}"))
        for reason, n in list((c.get("reasons") or {}).items())[:5]:
            parts.append(Text(f"  {n} × {reason}"))
    if q["total"]:
        rows = _table(f"Quarantined: {q['total']}{'+' if q['more'] else ''} rows", "row", "id", "reason")
        for r in q["rows"][:10]:
            rows.add_row("batch" if r["whole_batch"] else str(r["row_index"]), r["row_id"] or "-", clip(r["reason"], 50))
        parts.append(rows)

    drift = d["drift"]
    if drift:
        table = _table(f"Drift ({drift['engine']}): {'DRIFT in ' + str(drift['n_drifted']) + ' feature(s)' if drift['detected'] else 'no drift'}",
                       "feature", "test", "stat", "p", "p adj", "effect", "rank", "verdict")
        for f in drift["features"]:
            table.add_row(clip(f["feature"], 14), f["test"], num(f["statistic"]), pval(f["p_value"]),
                          pval(f["p_corrected"]), num(f["effect_size"]), num(f["importance_rank"]),
                          Text("DRIFT", style="bold red") if f["drifted"] else Text("ok"))
        parts += [Text(""), table]
        histograms = _histograms(drift["features"])
        if histograms is not None:
            parts += [Text(""), histograms]
    else:
        parts += [Text(""), Text("Drift: not measured (no production model to compare with)")]

    if d["metric_values"]:
        metrics = _table("Metrics on this batch", "metric", "value")
        for name, value in d["metric_values"].items():
            metrics.add_row(name, num(value))
        parts += [Text(""), metrics]
        if d.get("confusion"):
            (tn, fp), (fn, tp) = d["confusion"]
            parts.append(Text(f"confusion  TN {tn}  FP {fp}  FN {fn}  TP {tp}"))
    alerts = d["alerts"]
    parts += [Text(""), Text(f"Alerts: {len(alerts) or 'none'}", style="bold")]
    for a in alerts:
        state = f"acked by {a['acked_by']}" if a["acked_by"] else "OPEN"
        parts.append(Text(f"  [{a['severity']}] {a['rule']}: {a['message']} ({state})"))
    return Group(*parts)


HISTOGRAMS = 6  # features with a reference-vs-current picture: the drifted first, then by importance


def _histograms(features: list[dict[str, Any]]) -> Table | None:
    """Reference against current per feature as two block sparklines on one scale (no colour needed)."""
    shown = [f for f in features if (f.get("detail") or {}).get("histogram")][:HISTOGRAMS]
    if not shown:
        return None
    table = _table("Reference vs current (share per bin; · empty)", "feature", "reference", "current", "bins")
    for f in shown:
        h = f["detail"]["histogram"]
        top = max([*h["reference"], *h["current"]]) or 1.0
        if "labels" in h:
            bins = ", ".join(h["labels"])
        else:
            edges = h.get("edges") or []
            bins = f"ref deciles {edges[0]:.4g} … {edges[-1]:.4g}" if edges else "one bin"
        table.add_row(clip(f["feature"], 14), sparkline(h["reference"], top), sparkline(h["current"], top),
                      clip(bins, 28))
    return table


class RunDetailScreen(KeelScreen):
    VIEW = "run"
    BINDINGS = [
        Binding("j,down", "scroll(1)", "Down", show=False, id="run.down", tooltip="Scroll down"),
        Binding("k,up", "scroll(-1)", "Up", show=False, id="run.up", tooltip="Scroll up"),
        Binding("c", "compare", "Compare", id="run.compare", tooltip="Compare this run's candidate with production"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.detail: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine(f"Run {self.run_id[:8]} · loading…", id="status")
        with VerticalScroll(id="run-body"):
            yield Static("", id="run-content")
        yield KeysFooter()

    def reload(self) -> None:
        self.load_run(self.run_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-run")
    def load_run(self, run_id: str) -> None:
        from keel.core.store import queries

        self.deliver(DetailLoaded("run", queries.run_detail(self.keel.ctx.engine(), run_id)))

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        self.detail = message.data
        self.query_one("#run-content", Static).update(render_run(message.data))
        self.show_status()
        self.refresh_bindings()

    def status_parts(self) -> list[str]:
        d = self.detail
        if d is None:
            return [f"Run {self.run_id[:8]}", "loading…"]
        return [f"Run {d['run_id'][:8]}", f"{d['model']}", d["batch"], "esc back"]

    def action_scroll(self, step: int) -> None:
        body = self.query_one("#run-body", VerticalScroll)
        body.scroll_relative(y=step, animate=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "compare":
            return True if self.detail and self.detail.get("model_version") else None
        return super().check_action(action, parameters)

    def action_compare(self) -> None:
        from keel.tui.screens.compare import CompareScreen

        if self.detail and self.detail.get("model_version"):
            self.app.push_screen(CompareScreen(self.detail["model"], int(self.detail["model_version"])))
