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
    """Start this home's Prefect server in the background, on a free loopback port, and keel's runner beside it
    (a process that has imported the pipeline's libraries once and runs `keel run`, `demo` and `replay`)."""
    from keel.cli import runner as runners
    from keel.core.errors import PrefectError
    from keel.flows.local_server import start

    home = _prefect_home()
    launched = runners.start(home)  # its imports overlap the server's start-up
    server, started = start(home)
    runner = runners.wait_ready(home, launched) if launched is not None else runners.running(home)
    if runner is None:
        raise PrefectError(f"keel's runner did not start (see {home / 'runner.log'}); 'keel server stop' stops "
                           "the Prefect server, and commands run in their own process meanwhile")
    if as_json:
        emit_json({"url": server.url, "pid": server.pid, "log": server.log, "started": started,
                   "runner": {"pid": runner.pid, "log": runner.log, "started": launched is not None}})
        return
    if started:
        click.echo(f"Prefect server for this home at {server.url} (pid {server.pid}, log {server.log})")
    else:
        click.echo(f"already running at {server.url} (pid {server.pid})")
    if launched is not None:
        click.echo(f"keel's runner for run, demo and replay (pid {runner.pid}, log {runner.log})")


@server_group.command("stop")
def stop_cmd() -> None:
    """Stop this home's Prefect server and keel's runner (the commands it is running are stopped)."""
    from keel.cli import runner as runners
    from keel.flows.local_server import stop

    home = _prefect_home()
    runner = runners.stop(home)
    server = stop(home)
    click.echo(f"stopped the Prefect server at {server.url}" if server else "no Prefect server was running for this home")
    if runner is not None:
        click.echo(f"stopped keel's runner (pid {runner.pid})")


@server_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(as_json: bool) -> None:
    """Whether this home's Prefect server and keel's runner run, and where."""
    from keel.cli import runner as runners
    from keel.flows.local_server import healthy, running

    home = _prefect_home()
    server, runner = running(home), runners.running(home)
    up = server is not None and healthy(server.url)
    if as_json:
        emit_json({"running": server is not None, "healthy": up, "url": server.url if server else None,
                   "pid": server.pid if server else None,
                   "runner": {"pid": runner.pid, "log": runner.log} if runner else None})
        return
    if server is None:
        click.echo("no Prefect server for this home: each command starts a temporary one ('keel server start')")
    else:
        click.echo(f"running at {server.url} (pid {server.pid})" + ("" if up else ", not answering yet"))
    if runner is not None:
        click.echo(f"keel's runner: pid {runner.pid} (log {runner.log})")
    elif server is not None:
        click.echo("no keel runner: run, demo and replay import their libraries each time ('keel server start' "
                   "starts it)")


COMMANDS = [server_group]
