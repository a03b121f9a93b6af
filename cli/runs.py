"""keel runs: pipeline runs, newest first."""

from __future__ import annotations

import click

from keel.cli.output import emit_json, fmt, table


@click.command("runs")
@click.option("--model", help="Only this model's runs.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_cmd(model: str | None, limit: int, as_json: bool) -> None:
    """List pipeline runs, newest first."""
    from keel.core.store.queries import list_runs
    from keel.core.workspace import open_store

    rows = list_runs(open_store(), model, limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no runs yet: try 'keel demo' or 'keel run BATCH'")
        return
    click.echo(table(
        ["started", "run", "model", "status", "drifted", "auc", "decision", "production"],
        [[r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), r["run_id"][:8], r["model"], r["status"], r["drifted"],
          fmt((r["metrics"] or {}).get("roc_auc")), r["decision"] or "-",
          f"v{r['production_version']}" if r["production_version"] else "-"] for r in rows]))


COMMANDS = [runs_cmd]
