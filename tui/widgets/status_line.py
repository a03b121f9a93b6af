"""One line under the title: what is shown, the filter, and whether the operator may act (and why not)."""

from __future__ import annotations

from textual.widgets import Static


class StatusLine(Static):
    """Plain text, so the meaning survives NO_COLOR and 16-colour terminals."""

    def set(self, *parts: str) -> None:
        self.update(" · ".join(p for p in parts if p))
