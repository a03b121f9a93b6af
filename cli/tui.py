"""keel tui: the operator's terminal UI (and, with --serve, the same UI in a browser on localhost)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

SERVE_HOST = "127.0.0.1"  # loopback only: reach it from elsewhere through an SSH tunnel, never directly


def serve_command(config: Path | None, read_only: bool, refresh: float) -> str:
    """The shell command textual-serve runs for each browser session: this same `keel tui`."""
    argv = [sys.executable, "-m", "keel", "tui", "--refresh", str(refresh)]
    if config is not None:
        argv += ["--config", str(config.resolve())]
    if read_only:
        argv.append("--read-only")
    return shlex.join(argv)


@click.command("tui")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="keel.toml (default: ./keel.toml; without one the store under KEEL_HOME opens read-only).")
@click.option("--read-only", is_flag=True, help="Browse only: approve, reject, promote and roll back are off.")
@click.option("--refresh", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between automatic refreshes (0 = off).")
@click.option("--serve", is_flag=True,
              help=f"Serve the TUI to a browser through textual-serve, bound to {SERVE_HOST} only.")
@click.option("--port", type=click.IntRange(1, 65535), default=8566, show_default=True,
              help="Port for --serve (on the loopback interface).")
def tui_cmd(config: Path | None, read_only: bool, refresh: float, serve: bool, port: int) -> None:
    """Browse runs, compare candidates and approve, reject or roll back, in the terminal.

    Over slow links set TEXTUAL_ANIMATIONS=none (and NO_COLOR for monochrome terminals).
    With --serve the same UI opens at http://127.0.0.1:PORT/ (loopback only; from another
    machine use `ssh -L PORT:127.0.0.1:PORT ops-host`).
    """
    from keel.core.errors import ConfigError

    if config is not None and not config.exists():
        raise ConfigError(f"{config}: no such configuration file")
    if config is None and Path("keel.toml").exists():
        config = Path("keel.toml")
    if serve:
        from textual_serve.server import Server

        click.echo(f"keel tui: serving on http://{SERVE_HOST}:{port}/ (loopback only; ctrl+c stops)", err=True)
        Server(serve_command(config, read_only, refresh), host=SERVE_HOST, port=port, title="keel").serve()
        return
    from keel.tui.app import KeelApp

    KeelApp(config, read_only=read_only, refresh=refresh).run()


COMMANDS = [tui_cmd]
