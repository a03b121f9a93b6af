"""keel server: a long-lived local Prefect server under KEEL_HOME, which every keel command then uses."""

from __future__ import annotations

from pathlib import Path

import click

from keel.cli.output import emit_json


def _prefect_home() -> Path:
    import os

    from keel.flows.settings import configure_prefect

    configure_prefect()  # PREFECT_HOME under KEEL_HOME (unless set), the migrated template for a new home
    return Path(os.environ["PREFECT_HOME"])


@click.group("server")
def server_group() -> None:
    """A long-lived Prefect server for this KEEL_HOME (without one, each command starts a temporary one)."""


@server_group.command("start")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def start_cmd(as_json: bool) -> None:
    """Start this home's Prefect server in the background, on a free loopback port."""
    from keel.flows.local_server import start

    server, started = start(_prefect_home())
    if as_json:
        emit_json({"url": server.url, "pid": server.pid, "log": server.log, "started": started})
    elif started:
        click.echo(f"Prefect server for this home at {server.url} (pid {server.pid}, log {server.log})")
    else:
        click.echo(f"already running at {server.url} (pid {server.pid})")


@server_group.command("stop")
def stop_cmd() -> None:
    """Stop this home's Prefect server."""
    from keel.flows.local_server import stop

    server = stop(_prefect_home())
    click.echo(f"stopped the Prefect server at {server.url}" if server else "no Prefect server was running for this home")


@server_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(as_json: bool) -> None:
    """Whether this home's Prefect server runs, and where."""
    from keel.flows.local_server import healthy, running

    server = running(_prefect_home())
    up = server is not None and healthy(server.url)
    if as_json:
        emit_json({"running": server is not None, "healthy": up, "url": server.url if server else None,
                   "pid": server.pid if server else None})
    elif server is None:
        click.echo("no Prefect server for this home: each command starts a temporary one ('keel server start')")
    else:
        click.echo(f"running at {server.url} (pid {server.pid})" + ("" if up else ", not answering yet"))


COMMANDS = [server_group]
