"""keel labels, keel alerts (and alerts ack), keel metrics serve and estimates: monitoring from the command line."""

from __future__ import annotations

import click

from keel.cli.output import emit_json, fmt, table


@click.command("labels")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--config", "-c", default="keel.toml", show_default=True, help="Project configuration.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def labels_cmd(file: str, config: str, as_json: bool) -> None:
    """Attach labels that came later (FILE: id and target columns) and measure the batches they belong to."""
    from keel.core.monitoring.labels import attach_labels
    from keel.core.workspace import Workspace

    out = attach_labels(Workspace.open(config), file)
    if as_json:
        emit_json(out)
        return
    click.echo(f"{out['labels']} label(s) in {file}: {out['matched_rows']} scored row(s) matched, "
               f"{out['changed_rows']} updated, {out['unknown_ids']} unknown id(s)")
    if out["unknown_ids"]:
        click.echo(f"  unknown ids (not scored by this model), e.g. {', '.join(out['unknown_examples'])}")
    for why, n in out["skipped"].items():
        click.echo(f"  skipped {n} row(s): {why}")
    if out["batches"]:
        click.echo(table(
            ["batch", "model", "labelled", "accuracy", "est. acc", "auc", "est. auc", "f1", "below threshold", "alerts"],
            [[b["dataset_id"][:12], f"v{b['model_version']}", f"{b['labelled']}/{b['scored']}",
              fmt(b["metrics"]["accuracy"]), fmt(b["estimate"].get("accuracy")), fmt(b["metrics"]["roc_auc"]),
              fmt(b["estimate"].get("roc_auc")), fmt(b["metrics"]["f1"]),
              ", ".join(b["below_threshold"]) or "-", ", ".join(str(a["id"]) for a in b["alerts"]) or "-"]
             for b in out["batches"]]))


@click.group("alerts", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include acknowledged alerts.")
@click.option("--model", help="Only this model's alerts.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def alerts_cmd(ctx: click.Context, show_all: bool, model: str | None, limit: int, as_json: bool) -> None:
    """List open alerts, newest first ('keel alerts ack ID' acknowledges one)."""
    if ctx.invoked_subcommand is not None:
        return
    from keel.core.store.queries import alerts_page
    from keel.core.workspace import open_store

    rows = alerts_page(open_store(), not show_all, model, limit)["rows"]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no open alerts" if not show_all else "no alerts yet")
        return
    click.echo(table(
        ["id", "created", "model", "rule", "severity", "delivered", "acked", "message"],
        [[r["id"], r["created_at"].strftime("%Y-%m-%d %H:%M"), r["model"], r["rule"], r["severity"],
          "yes" if r["delivered"] else "NO", r["acked_by"] or "-", r["message"][:70]] for r in rows]))


@alerts_cmd.command("ack")
@click.argument("alert_id", metavar="ID", type=int)
@click.option("--reason", "-r", default=None, help="Why (kept with the alert and in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ack_cmd(alert_id: int, reason: str | None, as_json: bool) -> None:
    """Acknowledge alert ID."""
    from keel.core.actor import current_actor
    from keel.core.monitoring.alerts import acknowledge
    from keel.core.workspace import open_store

    row = acknowledge(open_store(), alert_id, current_actor(), reason)
    if as_json:
        emit_json(row)
    elif row["already"]:
        click.echo(f"alert {alert_id} was already acknowledged by {row['acked_by']} at "
                   f"{row['acked_at']:%Y-%m-%d %H:%M}")
    else:
        click.echo(f"alert {alert_id} ({row['rule']}, {row['model']}) acknowledged by {row['acked_by']}")


@click.group("metrics")
def metrics_cmd() -> None:
    """Metric points for Prometheus and Grafana."""


@metrics_cmd.command("serve")
@click.option("--port", default=9108, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def serve_cmd(port: int, host: str) -> None:
    """Serve the latest metric values and open-alert counts in the Prometheus text format."""
    import time

    from keel.core.errors import UsageError
    from keel.core.monitoring.exporter import serve_metrics
    from keel.core.workspace import open_store

    try:
        server, _ = serve_metrics(open_store(), host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"serving keel metrics on http://{host}:{server.server_port}/metrics (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


@metrics_cmd.command("estimates")
@click.argument("model")
@click.option("--metric", default="accuracy", show_default=True,
              type=click.Choice(["accuracy", "precision", "recall", "f1", "roc_auc"]), help="The estimated metric.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000), help="Newest batches.")
@click.option("--config", "-c", default="keel.toml", show_default=True, help="Project configuration (its store).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def estimates_cmd(model: str, metric: str, limit: int, config: str, as_json: bool) -> None:
    """The label-free estimate against the realised value once labels came, batch by batch, each miss explained."""
    from keel.cli.registry import _store
    from keel.core.monitoring.estimate import WITHIN
    from keel.core.store.queries import estimate_record

    record = estimate_record(_store(config), model, metric, limit)
    if as_json:
        emit_json(record)
        return
    rows = record["rows"]
    if not rows:
        click.echo(f"no batch of {model} has both an estimate and labels yet")
        return
    click.echo(table(
        ["batch", "data until", "model", "calibrated on", f"est. {metric}", "realised", "miss (pts)",
         "positive rate exp/real", "why"],
        [[r["batch"], f"{r['batch_time']:%Y-%m-%d %H:%M}" if r["batch_time"] else "-", f"v{r['version']}",
          r["calibration"], fmt(r["estimated"]), fmt(r["realised"]),
          "-" if r["miss"] is None else f"{100 * r['miss']:+.1f}",
          f"{fmt(r['expected_rate'])} / {fmt(r['realised_rate'])}", "; ".join(r["why"]) or WITHIN]
         for r in rows]))
    within = f", {100 * record['within']:.0f}% of batches within {100 * record['tolerance']:.0f} points"
    click.echo(f"\nmean absolute miss {100 * record['mae']:.1f} points over {len(rows)} batch(es){within}")


COMMANDS = [labels_cmd, alerts_cmd, metrics_cmd]
