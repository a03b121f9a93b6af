"""Compare: candidate against production as the gate saw them: metric deltas with confidence
intervals, both confusion matrices, churn, the drift of the batch they were judged on, the gate's
reasons, the history of a metric over batches, and production's label-free estimate against the labels."""

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

from keel.tui.format import better, ci, clip, delta, num, pval
from keel.tui.messages import DetailLoaded
from keel.tui.modals.confirm import ActionRequest
from keel.tui.screens.base import KeelScreen
from keel.tui.widgets.keys_footer import KeysFooter
from keel.tui.widgets.metric_chart import MetricChart
from keel.tui.widgets.status_line import StatusLine

CHART_METRICS = ("roc_auc", "accuracy", "f1", "log_loss")
LOWER_IS_BETTER = {"log_loss", "brier"}


def _confusion(title: str, cm: list[list[int]] | None) -> RenderableType:
    table = Table(title=title, box=None, show_edge=False, pad_edge=False, title_style="bold")
    table.add_column("")
    table.add_column("pred 0", justify="right")
    table.add_column("pred 1", justify="right")
    if cm:
        (tn, fp), (fn, tp) = cm
        table.add_row("true 0", f"TN {tn}", f"FP {fp}")
        table.add_row("true 1", f"FN {fn}", f"TP {tp}")
    else:
        table.add_row("-", "-", "-")
    return table


LOWER_IS_BETTER = ("log_loss", "brier")  # as keel.core.model.evaluate.HIGHER_IS_BETTER says, without its imports


def delta_ci(m: dict[str, Any]) -> tuple[float | None, float | None]:
    """The interval of the delta shown beside it: stored intervals are of the improvement, which is the
    negated delta for metrics where lower is better (log loss, Brier)."""
    low, high = m.get("ci_low"), m.get("ci_high")
    if low is None or high is None or m.get("metric") not in LOWER_IS_BETTER:
        return low, high
    return -high, -low


def verdict(m: dict[str, Any], alpha: float) -> Text:
    p = m.get("p_adjusted", m.get("p_value"))
    imp = m.get("improvement")
    if p is None or imp is None:
        return Text("n/a")
    if p >= alpha:
        return Text("same (n.s.)")
    return Text("BETTER", style="green") if imp > 0 else Text("WORSE", style="bold red")


def render_compare(c: dict[str, Any]) -> RenderableType:
    alpha = c.get("alpha") or 0.05
    parts: list[RenderableType] = []
    if not c["metrics"]:
        parts.append(Text("No paired comparison stored (first model: judged against the policy minimums)."))
    else:
        table = Table(title=f"Candidate v{c['candidate']} vs production v{c['production']} on {c['n']} holdout rows",
                      title_justify="left", title_style="bold", box=None, show_edge=False, pad_edge=False)
        for col in ("metric", "cand", "prod", "delta", f"{int(round((1 - alpha) * 100))}% CI", "p adj", "verdict"):
            table.add_column(col, no_wrap=True)
        for m in c["metrics"]:
            table.add_row(clip(m["metric"], 9), num(m.get("candidate")), num(m.get("production")),
                          Text(delta(m.get("delta")), style=better(m.get("improvement"))),
                          ci(*delta_ci(m)), pval(m.get("p_adjusted")), verdict(m, alpha))
        parts.append(table)
    churn = c.get("churn")
    parts.append(Text(f"prediction churn: {num(churn * 100 if churn is not None else None, 1)}% of holdout "
                      "predictions flip between the two"))
    grid = Table.grid(padding=(0, 4))
    grid.add_row(_confusion(f"candidate v{c['candidate']}", c.get("candidate_confusion")),
                 _confusion(f"production v{c['production'] or '-'}", c.get("production_confusion")))
    parts += [Text(""), grid, Text("")]
    parts.append(Text(f"Gate ({c['status']}):", style="bold"))
    for reason in c["reasons"] or ["(no reasons stored)"]:
        parts.append(Text(f"  • {reason}"))
    drift = c.get("drift")
    parts.append(Text(""))
    if drift:
        table = Table(title=f"Drift of the judged batch {c['batch']}: "
                            f"{'DRIFT in ' + str(drift['n_drifted']) if drift['detected'] else 'no drift'}",
                      title_justify="left", title_style="bold", box=None, show_edge=False, pad_edge=False)
        for col in ("feature", "test", "p adj", "effect", "rank", "verdict"):
            table.add_column(col, no_wrap=True)
        for f in drift["features"][:12]:
            table.add_row(clip(f["feature"], 16), f["test"], pval(f["p_corrected"]), num(f["effect_size"]),
                          num(f["importance_rank"]), Text("DRIFT", style="bold red") if f["drifted"] else Text("ok"))
        parts.append(table)
    else:
        parts.append(Text(f"Drift of the judged batch {c['batch']}: not measured"))
    return Group(*parts)


def render_estimates(record: dict[str, Any] | None) -> RenderableType:
    """Production's label-free estimate of accuracy against the realised value, with why each miss happened."""
    rows = (record or {}).get("rows") or []
    if not rows:
        return Text("Label-free estimate against the labels: no batch has both yet")
    mae = record["mae"]
    table = Table(title=f"Label-free estimate of accuracy against the labels (mean miss "
                        f"{'-' if mae is None else f'{100 * mae:.1f}'} points)",
                  title_justify="left", title_style="bold", box=None, show_edge=False, pad_edge=False)
    for col in ("batch", "model", "est.", "real", "miss", "why"):
        table.add_column(col, no_wrap=col != "why")
    for r in rows:
        miss = r["miss"]
        table.add_row(clip(r["batch"], 22), f"v{r['version']}", num(r["estimated"]), num(r["realised"]),
                      Text("-" if miss is None else f"{100 * miss:+.1f}", style="bold" if r["why"] else ""),
                      "; ".join(r["why"]) or record["within_label"])
    return table


class CompareScreen(KeelScreen):
    VIEW = "compare"
    BINDINGS = [
        Binding("A", "approve", "Approve", id="compare.approve", tooltip="Approve this candidate (confirm, reason)"),
        Binding("X", "reject", "Reject", id="compare.reject", tooltip="Reject this candidate (confirm, reason)"),
        Binding("m", "next_metric", "Metric", id="compare.metric", tooltip="Chart the next metric's history"),
        Binding("j,down", "scroll(1)", "Down", show=False, id="compare.down", tooltip="Scroll down"),
        Binding("k,up", "scroll(-1)", "Up", show=False, id="compare.up", tooltip="Scroll up"),
    ]

    def __init__(self, model: str | None = None, candidate: int | None = None) -> None:
        super().__init__()
        self.model, self.candidate = model, candidate
        self.data: dict[str, Any] | None = None
        self.loaded = False
        self.metric = CHART_METRICS[0]

    def compose(self) -> ComposeResult:
        yield StatusLine("Compare · loading…", id="status")
        with VerticalScroll(id="compare-body"):
            yield Static("", id="compare-content")
            yield MetricChart(id="chart")
            yield Static("", id="estimates")
        yield KeysFooter()

    def reload(self) -> None:
        self.load_compare(self.model, self.candidate, self.metric)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-compare")
    def load_compare(self, model: str | None, candidate: int | None, metric: str) -> None:
        from keel.core.store import queries

        engine = self.keel.ctx.engine()
        data = queries.compare(engine, model, candidate)
        history = queries.metric_history(engine, data["model"], metric) if data else []
        estimates = queries.estimate_record(engine, data["model"], "accuracy", limit=6) if data else None
        self.deliver(DetailLoaded("compare", {"compare": data, "history": history, "metric": metric,
                                              "estimates": estimates}))

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        self.data, self.loaded = message.data["compare"], True
        content = self.query_one("#compare-content", Static)
        if self.data is None:
            content.update("Nothing to compare yet: no candidate has been judged against production.")
        else:
            content.update(render_compare(self.data))
        self.query_one(MetricChart).plot(message.data["metric"], message.data["history"])
        self.query_one("#estimates", Static).update(render_estimates(message.data["estimates"]))
        self.show_status()
        self.refresh_bindings()

    def status_parts(self) -> list[str]:
        if not self.loaded:
            return ["Compare", "loading…"]
        if self.data is None:
            return ["Compare", "nothing to compare"]
        d = self.data
        review = f"review #{d['review_id']} {d['status']}" if d.get("review_id") else d["status"]
        return ["Compare", f"{d['model']} v{d['candidate']} vs v{d['production'] or '-'}", review]

    def can(self, action: str) -> bool:
        return bool(self.data and self.data.get("review_id") and self.data["status"] == "open"
                    and action in ("approve", "reject"))

    def action_approve(self) -> None:
        self._ask("approve")

    def action_reject(self) -> None:
        self._ask("reject")

    def _ask(self, kind: str) -> None:
        d = self.data
        if d:
            self.ask(ActionRequest(kind, d["model"], d["candidate"],
                                   f"candidate v{d['candidate']} against production v{d['production'] or '-'}; "
                                   f"gate: {(d['reasons'] or ['-'])[0]}"))

    def action_next_metric(self) -> None:
        self.metric = CHART_METRICS[(CHART_METRICS.index(self.metric) + 1) % len(CHART_METRICS)]
        self.reload()

    def action_scroll(self, step: int) -> None:
        self.query_one("#compare-body", VerticalScroll).scroll_relative(y=step, animate=False)
