"""The `keel` command: one entry point; each command group lives in its own module."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import traceback
from typing import Any, NoReturn

import click

from keel.core.errors import KeelError, mask_secrets
from keel.core.faults import interrupt


class KeelGroup(click.Group):
    """Turns every failure into one clear line and an exit code; --debug shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeelError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130)
        except Exception as exc:  # the last line of defence: never a traceback by default
            _fail(ctx, f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)", 1)


def _fail(ctx: click.Context, message: str, code: int) -> None:
    if os.environ.get("KEEL_DEBUG") or (ctx.obj or {}).get("debug"):
        click.echo(mask_secrets(traceback.format_exc()).rstrip(), err=True)
    first = mask_secrets(message.strip().splitlines()[0]) if message.strip() else "failed"
    click.echo(f"keel: {first}", err=True)
    sys.exit(code)


@click.group(cls=KeelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="keel")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """keel keeps machine-learning models honest in production."""
    ctx.obj = {"debug": debug}


def _register() -> None:
    from keel.cli import init, lineage, models, monitor, pipeline, registry, replay, runs, server, tui

    for module in (pipeline, runs, models, init, registry, lineage, tui, monitor, replay, server):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    from keel.cli.runner import delegate

    served = delegate(sys.argv[1:])  # `keel server start`'s warm runner runs run, demo and replay, when it is up
    if served is not None:
        _exit(served)
    try:
        code = _run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            click.echo(exc.code, err=True)
    _exit(code)


def _run() -> int:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, &)
        signal.signal(signal.SIGINT, interrupt)
    try:
        code = cli.main(prog_name="keel", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"keel: {exc.format_message()}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"keel: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.Abort:
        click.echo("keel: aborted", err=True)
        return 130
    return code if isinstance(code, int) else 0


def _exit(code: int) -> NoReturn:
    """Leave now: run the atexit handlers (Prefect's server stop, its log and event flushes, logging's
    shutdown), flush the output, and skip the interpreter's teardown of every imported module, which
    took about 2 s after a flow run. Every thread left at that point is a daemon. KEEL_SLOW_EXIT=1
    exits the ordinary way."""
    if os.environ.get("KEEL_SLOW_EXIT"):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (keel runs | head) or a closed stream
            pass
    os._exit(code)
