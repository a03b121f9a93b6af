"""keel tui: the operator's terminal UI."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("tui")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="keel.toml (default: ./keel.toml; without one the store under KEEL_HOME opens read-only).")
@click.option("--read-only", is_flag=True, help="Browse only: approve, reject, promote and roll back are off.")
@click.option("--refresh", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between automatic refreshes (0 = off).")
def tui_cmd(config: Path | None, read_only: bool, refresh: float) -> None:
    """Browse runs, compare candidates and approve, reject or roll back, in the terminal.

    Over slow links set TEXTUAL_ANIMATIONS=none (and NO_COLOR for monochrome terminals).
    """
    from keel.core.errors import ConfigError

    if config is not None and not config.exists():
        raise ConfigError(f"{config}: no such configuration file")
    if config is None and Path("keel.toml").exists():
        config = Path("keel.toml")
    from keel.tui.app import KeelApp

    KeelApp(config, read_only=read_only, refresh=refresh).run()


COMMANDS = [tui_cmd]
