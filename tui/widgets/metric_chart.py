"""Metric history over batches: a sparkline with its numbers written beside it."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static


class MetricChart(Vertical):
    """A labelled Sparkline; the label states first, last, min and max so no colour is needed."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="chart-label")
        yield Sparkline([], summary_function=max)

    def plot(self, name: str, points: list[dict[str, Any]]) -> None:
        values = [p["value"] for p in points if p.get("value") is not None]
        label = self.query_one(".chart-label", Static)
        spark = self.query_one(Sparkline)
        if not values:
            label.update(f"{name} over batches: no points yet")
            spark.data = []
            return
        trend = "▲" if values[-1] > values[0] else ("▼" if values[-1] < values[0] else "=")
        versions = sorted({p["version"] for p in points if p.get("version") is not None})
        label.update(f"{name} over the last {len(values)} batches ({', '.join(f'v{v}' for v in versions)}): "
                     f"first {values[0]:.3f} last {values[-1]:.3f} {trend} · min {min(values):.3f} "
                     f"max {max(values):.3f}")
        spark.data = values
