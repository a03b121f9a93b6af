"""keel models: model versions with status, aliases and metrics."""

from __future__ import annotations

import click

from keel.cli.output import emit_json, fmt, table


@click.command("models")
@click.option("--model", help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(model: str | None, as_json: bool) -> None:
    """List model versions: status, aliases, holdout metrics."""
    from keel.core.store.queries import list_models
    from keel.core.workspace import open_store

    rows = list_models(open_store(), model)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no models yet: try 'keel demo' or 'keel run BATCH'")
        return
    click.echo(table(
        ["name", "version", "status", "aliases", "auc", "accuracy", "created"],
        [[r["name"], r["version"], r["status"], ",".join(r["aliases"]) or "-", fmt(r["metrics"].get("roc_auc")),
          fmt(r["metrics"].get("accuracy")), r["created_at"].strftime("%Y-%m-%d %H:%M:%S")] for r in rows]))


COMMANDS = [models_cmd]
