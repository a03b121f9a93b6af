"""Plain-text formatting for the TUI: numbers, times, deltas and verdicts that never rely on colour."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pval(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def when(at: datetime | None, seconds: bool = False) -> str:
    if at is None:
        return "-"
    return at.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def short_when(at: datetime | None) -> str:
    return at.strftime("%m-%d %H:%M") if at else "-"


def delta(value: float | None, higher_is_better: bool = True, digits: int = 3) -> str:
    """A signed delta with an arrow: ▲ up, ▼ down, = unchanged (the arrow is the meaning, not colour)."""
    if value is None:
        return "-"
    arrow = "=" if abs(value) < 10 ** -digits else ("▲" if value > 0 else "▼")
    return f"{arrow}{value:+.{digits}f}"


def better(improvement: float | None) -> str:
    """Style name for an improvement (used beside the text, never instead of it)."""
    if improvement is None or abs(improvement) < 1e-9:
        return ""
    return "green" if improvement > 0 else "red"


def ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None:
        return "-"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def clip(text: Any, width: int) -> str:
    s = "-" if text is None else str(text)
    return s if len(s) <= width else s[: width - 1] + "…"


def count_label(offset: int, shown: int, total: int, more: bool) -> str:
    """'1-100 of >500', '1-12 of 12', 'none'."""
    if shown == 0:
        return "none" if offset == 0 else f"{offset} of {'>' if more else ''}{total}"
    return f"{offset + 1}-{offset + shown} of {'>' if more else ''}{total}"


BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float] | None, top: float | None = None) -> str:
    """Unicode-block bars, one per value, scaled to ``top`` (default: the largest); '·' is exactly zero.

    Heights carry the meaning, so it reads the same without colour."""
    if not values:
        return "-"
    top = top if top and top > 0 else max(values) or 1.0
    return "".join("·" if v <= 0 else BLOCKS[min(len(BLOCKS) - 1, int(v / top * (len(BLOCKS) - 1) + 0.5))]
                   for v in values)


STATUS_STYLE = {"completed": "green", "promoted": "green", "production": "green", "PASS": "green",
                "failed": "red", "rejected": "red", "quarantined": "red", "FAIL": "red",
                "review": "yellow", "running": "cyan", "open": "yellow", "candidate": "cyan"}
