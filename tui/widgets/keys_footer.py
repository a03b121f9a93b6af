"""Textual's Footer, rebuilt only when the keys it shows change."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    """Footer rebuilds all its keys on every bindings update (focus, screen stack, rights); each rebuild restyles
    every key, about 0.1 s for keel's dozen keys. At start-up three or four updates arrive with the same keys, so
    this one rebuilds only when the bindings, their enabled state or their tooltips differ from the last rebuild."""

    _shown: Any = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        will_rebuild = screen.app.app_focus and self.is_attached and screen is self.screen
        shown = tuple((binding, enabled, tooltip) for _, binding, enabled, tooltip in screen.active_bindings.values())
        if will_rebuild and self._bindings_ready and shown == self._shown:
            return
        if will_rebuild:
            self._shown = shown
        super().bindings_changed(screen)
