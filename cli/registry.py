"""keel reviews / approve / reject / promote / rollback / history / audit verify: the audited registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from keel.cli.output import emit_json, fmt, table

if TYPE_CHECKING:
    from keel.core.registry.transactions import Decision

CONFIG = click.option("--config", "-c", default="keel.toml", show_default=True, help="Project configuration (approvers).")
REASON = click.option("--reason", "-r", required=True, help="Why: stored in the audit log.")


def _ws(config: str) -> Any:
    from keel.core.workspace import Workspace

    return Workspace.open(config)


def _store(config: str) -> Any:
    """The store of the project when its keel.toml exists, else the one the environment names."""
    from pathlib import Path

    from keel.core.workspace import open_store

    return _ws(config).engine if Path(config).exists() else open_store()


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"



@click.command("reviews")
@CONFIG
@click.option("--model", help="Only this model.")
@click.option("--all", "show_all", is_flag=True, help="Include decided reviews.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reviews_cmd(config: str, model: str | None, show_all: bool, as_json: bool) -> None:
    """List open reviews: candidate, production, why it was flagged, and who may decide."""
    from pathlib import Path

    from keel.core.store.queries import reviews_page

    approvers = _ws(config).cfg.review.approvers if Path(config).exists() else None
    rows = reviews_page(_store(config), None if show_all else "open", model, limit=1000)["rows"]
    for r in rows:
        r["approvers"] = approvers or "anyone"
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no open reviews")
        return
    out = []
    for r in rows:
        primary = next(iter(((r["comparison"] or {}).get("metrics") or {}).items()), None)
        delta = f"{primary[0]} {fmt(primary[1].get('improvement'), 4)}" if primary else "-"
        approvals = sum(d["decision"] == "approve" for d in r["decisions"])
        out.append([r["model"], f"v{r['candidate_version']}", f"v{r['production_version']}" if r["production_version"]
                    else "-", r["status"], delta, f"{approvals}/{r['required_approvals']}", _when(r["created_at"])])
    click.echo(table(["model", "candidate", "production", "status", "change", "approvals", "opened"], out))
    for r in rows:
        click.echo(f"\n{r['model']} v{r['candidate_version']}: " + "; ".join(r["reasons"])[:600])
    click.echo(f"\nwho may decide: {', '.join(approvers) if approvers else 'anyone (no [review] approvers)'}")


def _done(message: str, as_json: bool, data: dict[str, Any], decision: Decision) -> None:
    """Say what changed, then, each on its own line, what became of the pipeline runs that waited on it.

    A run that could not be resumed is reported on stderr; the exit code stays 0, as the decision is recorded.
    """
    runs = decision.waiting_runs
    if as_json:
        emit_json({**data, "waiting_runs": [run.to_dict() for run in runs]})
    else:
        click.echo(message)
    for run in runs:
        if not run.resumed:
            click.echo(f"keel: {run.message}", err=True)
        elif not as_json:
            click.echo(run.message)


@click.command("approve")
@click.argument("model")
@click.argument("version", type=int)
@REASON
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def approve_cmd(model: str, version: int, reason: str, config: str, as_json: bool) -> None:
    """Approve the review of MODEL VERSION (promotes it once enough approvers agree)."""
    from keel.core.registry.transactions import approve

    decision = approve(_ws(config), model, version, reason)
    review = decision.review
    if review.status == "approved":
        msg = f"approved: {model} v{version} is now production"
    else:
        msg = f"approval recorded for {model} v{version}; the review needs {review.required_approvals} distinct approvers"
    _done(msg, as_json, {"model": model, "version": version, "review_id": review.id, "status": review.status},
          decision)


@click.command("reject")
@click.argument("model")
@click.argument("version", type=int)
@REASON
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reject_cmd(model: str, version: int, reason: str, config: str, as_json: bool) -> None:
    """Reject candidate MODEL VERSION and close its review."""
    from keel.core.registry.transactions import reject

    decision = reject(_ws(config), model, version, reason)
    _done(f"rejected: {model} v{version}", as_json,
          {"model": model, "version": version, "status": decision.model_version.status}, decision)


@click.command("promote")
@click.argument("model")
@click.argument("version", type=int)
@REASON
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def promote_cmd(model: str, version: int, reason: str, config: str, as_json: bool) -> None:
    """Put MODEL VERSION in production by hand (artifact checked, audited)."""
    from keel.core.registry.transactions import promote

    decision = promote(_ws(config), model, version, reason)
    _done(f"promoted: {model} v{version} is now production", as_json,
          {"model": model, "version": version, "status": "production"}, decision)


@click.command("rollback")
@click.argument("model")
@click.option("--to", "to", type=int, help="Version to return to (default: the one that served before).")
@REASON
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rollback_cmd(model: str, to: int | None, reason: str, config: str, as_json: bool) -> None:
    """Return MODEL's production to the previous version (or --to VERSION), after checking its artifact."""
    from keel.core.registry.transactions import rollback

    decision = rollback(_ws(config), model, reason, to=to)
    mv = decision.model_version
    _done(f"rolled back: {model} v{mv.version} is now production", as_json,
          {"model": model, "version": mv.version, "status": "production"}, decision)


@click.command("history")
@click.argument("model")
@click.option("--at", "at", help="A moment (ISO 8601; no zone = UTC): what served then.")
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_cmd(model: str, at: str | None, config: str, as_json: bool) -> None:
    """What was in production for MODEL, from when until when, and why."""
    from keel.core.registry.lineage import history, parse_time

    moment = parse_time(at) if at else None
    rows = history(_store(config), model, moment)
    if as_json:
        emit_json(rows if moment is None else (rows[0] if rows else None))
        return
    if not rows:
        click.echo(f"nothing of {model} was in production {'at ' + at if at else 'yet'}")
        return
    click.echo(table(["version", "from (UTC)", "until (UTC)", "how", "by", "why"],
                     [[f"v{p['version']}", _when(p["from"]), _when(p["until"]) if p["until"] else "now",
                       p["action"], p["actor"], (p["reason"] or "")[:70]] for p in rows]))


@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit_verify_cmd(config: str, as_json: bool) -> None:
    """Check every audit event's hash and link; exit 1 naming the first bad entry."""
    from keel.core.errors import ChecksumMismatch
    from keel.core.registry import audit

    result = audit.verify(_store(config))
    if as_json:
        emit_json(result.to_dict())
        if not result.ok:
            raise SystemExit(ChecksumMismatch.exit_code)
        return
    if not result.ok:
        raise ChecksumMismatch(f"audit chain broken: {result.problem}")
    click.echo(f"audit chain intact: {result.events} events verified")


COMMANDS = [reviews_cmd, approve_cmd, reject_cmd, promote_cmd, rollback_cmd, history_cmd, audit_group]
