"""keel replay and keel dead-letters: the batches that did not get through (quarantined, or whose runs
failed), and running one again from its immutable stored copy under the current keel.toml."""

from __future__ import annotations

import click

from keel.cli.output import emit_json, table
from keel.core.errors import DataContractError


@click.command("replay")
@click.argument("dataset_version")
@click.option("--config", "-c", default="keel.toml", show_default=True, help="Project configuration.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def replay_cmd(dataset_version: str, config: str, as_json: bool) -> None:
    """Replay the quarantined or failed batch DATASET_VERSION (its id, a unique prefix, or a failed run's id).

    The whole pipeline runs on the stored copy under the current keel.toml (say, after a declared
    range was widened). With the configuration unchanged it is a replay of the earlier run and
    nothing changes. Once a replay gets through, the batch's quarantine rows are marked replayed;
    quarantined again, it exits 3.
    """
    from keel.cli.pipeline import _describe, run_batch
    from keel.core.actor import current_actor
    from keel.core.pipeline import replay
    from keel.core.pipeline.stages import preflight
    from keel.core.workspace import Workspace

    ws = Workspace.open(config)
    target = replay.resolve(ws, dataset_version)
    preflight(ws, str(target.path))  # a bad keel.toml or copy fails here, before Prefect starts
    summary = run_batch(str(target.path), config)
    marked = 0
    if summary["status"] != "quarantined":
        marked = replay.mark_replayed(ws, target.dataset_id, summary["run_id"], current_actor())
    summary = {**summary, "replayed_dataset": target.dataset_id, "source": target.source, "marked_replayed": marked}
    if as_json:
        emit_json(summary)
    else:
        kind = "quarantined" if target.rows else "failed"
        click.echo(f"replay of {kind} batch {target.dataset_id[:12] or '-'} ({target.source or target.path})")
        click.echo(_describe(summary))
        if summary["status"] != "quarantined" and target.rows:
            click.echo(f"quarantine: {marked} row(s) marked replayed" if marked
                       else "quarantine: already marked replayed; nothing changed")
    if summary["status"] == "quarantined":
        if as_json:
            raise SystemExit(DataContractError.exit_code)
        raise DataContractError(f"quarantined again: {summary['reasons'][0]}")


@click.command("dead-letters")
@click.option("--model", help="Only this model's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dead_letters_cmd(model: str | None, as_json: bool) -> None:
    """Batches whose pipeline runs failed and did not get through since: stage, error, attempts."""
    from keel.core.store.queries import dead_letters
    from keel.core.workspace import open_store

    rows = dead_letters(open_store(), model)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no failed batches waiting ('keel alerts' and the TUI show quarantined ones)")
        return
    click.echo(table(["batch", "dataset", "model", "stage", "attempts", "failed", "error"],
                     [[r["batch"], (r["dataset_id"] or "-")[:12], r["model"], r["stage"], r["attempts"],
                       r["failed_at"].strftime("%Y-%m-%d %H:%M") if r["failed_at"] else "-", (r["error"] or "-")[:60]]
                      for r in rows]))
    click.echo("\n'keel replay ID' runs one again (the dataset id, or the run id where there is none: "
               + ", ".join(r["run_id"][:8] for r in rows if not r["dataset_id"])[:60] + ")")


COMMANDS = [replay_cmd, dead_letters_cmd]
