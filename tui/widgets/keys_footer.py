"""Textual's Footer, rebuilt only when the keys it would show differ from those it shows."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import Footer


class KeysFooter(Footer):
    """Footer rebuilds all its keys on every bindings update (focus, screen stack, rights), and each rebuild restyles
    every key: about 0.05 s for keel's dozen keys, three or four times during start-up with the same keys. This one
    remembers what it last built and skips a rebuild that would build the same keys again.

    It leans on Textual 8's Footer: compose reads ``screen.active_bindings`` once ``_bindings_ready`` is set.
    tests/tui/test_screens.py checks that the keys still follow a change of the operator's rights."""

    _built: Any = None

    def _keys(self) -> Any:
        if not self._bindings_ready:
            return None  # nothing is built before the bindings are ready
        active = self.screen.active_bindings  # what Footer.compose reads: the shown keys and the palette's key
        shown = tuple((binding, enabled, tooltip) for _, binding, enabled, tooltip in active.values() if binding.show)
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        return shown, palette and palette[1:], self.show_command_palette, self.app.ENABLE_COMMAND_PALETTE

    def compose(self) -> ComposeResult:
        self._built = self._keys()
        yield from super().compose()

    async def recompose(self) -> None:
        if self._built is not None and self.is_attached and self._keys() == self._built:
            return
        await super().recompose()
