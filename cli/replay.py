"""keel replay: run a quarantined batch again, from its immutable stored copy, under the current keel.toml."""

from __future__ import annotations

import click

from keel.cli.output import emit_json
from keel.core.errors import DataContractError


@click.command("replay")
@click.argument("dataset_version")
@click.option("--config", "-c", default="keel.toml", show_default=True, help="Project configuration.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def replay_cmd(dataset_version: str, config: str, as_json: bool) -> None:
    """Replay the quarantined batch DATASET_VERSION (its id or a unique prefix of it).

    The whole pipeline runs on the stored copy under the current keel.toml (say, after a declared
    range was widened). With the configuration unchanged it is a replay of the earlier run and
    nothing changes. Once a replay gets through, the batch's quarantine rows are marked replayed;
    quarantined again, it exits 3.
    """
    from keel.cli.pipeline import _describe, _run_flow
    from keel.core.actor import current_actor
    from keel.core.pipeline import replay
    from keel.core.pipeline.stages import preflight
    from keel.core.workspace import Workspace

    ws = Workspace.open(config)
    target = replay.resolve(ws, dataset_version)
    preflight(ws, str(target.path))  # a bad keel.toml or copy fails here, before Prefect starts
    summary = _run_flow(str(target.path), config)
    marked = 0
    if summary["status"] != "quarantined":
        marked = replay.mark_replayed(ws, target.dataset_id, summary["run_id"], current_actor())
    summary = {**summary, "replayed_dataset": target.dataset_id, "source": target.source, "marked_replayed": marked}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"replay of quarantined batch {target.dataset_id[:12]} ({target.source or target.path})")
        click.echo(_describe(summary))
        if summary["status"] != "quarantined":
            click.echo(f"quarantine: {marked} row(s) marked replayed" if marked
                       else "quarantine: already marked replayed; nothing changed")
    if summary["status"] == "quarantined":
        if as_json:
            raise SystemExit(DataContractError.exit_code)
        raise DataContractError(f"quarantined again: {summary['reasons'][0]}")


COMMANDS = [replay_cmd]
