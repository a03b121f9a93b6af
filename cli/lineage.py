"""keel lineage / trace / score: where a model came from, why a prediction came out, batch inference."""

from __future__ import annotations

from typing import Any

import click

from keel.cli.output import emit_json, fmt
from keel.cli.registry import CONFIG, _store, _when


def _ds(d: dict[str, Any] | None, indent: str = "  ") -> list[str]:
    if d is None:
        return [f"{indent}-"]
    lines = [f"{indent}{d.get('kind', '?')} {d['id'][:12]}  rows {d.get('rows')}" + (f"  from {d['source']}" if d.get("source") else "")]
    lines += [f"{indent}  <- {p['kind']} {p['id'][:12]}  rows {p['rows']}  {p['source'] or ''}" for p in d.get("parents") or []]
    return lines


def _run(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    flow = f"  flow run {r['flow_run_id']}" if r.get("flow_run_id") else ""
    return f"{r['flow']} {r['run_id']}{flow}  {r['status']}  started {_when(r['started_at'])}  batch {r['source']}"


@click.command("lineage")
@click.argument("model")
@click.argument("version", type=int)
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def lineage_cmd(model: str, version: int, config: str, as_json: bool) -> None:
    """Where MODEL VERSION came from: run, data, parameters, code, metrics, decisions and who took them."""
    from keel.core.registry.lineage import lineage
    info = lineage(_store(config), model, version)
    if as_json:
        emit_json(info)
        return
    lines = [f"{model} v{version}  {info['status']}  created {_when(info['created_at'])}",
             f"artifact sha256 {info['artifact']['sha256']}",
             f"artifact at {info['artifact']['uri']}",
             f"run: {_run(info['run'])}"]
    if info["run"] and info["run"].get("policy_hash"):
        lines.append(f"gate policy hash: {info['run']['policy_hash']}")
    lines += ["training data:", *_ds(info["train_dataset"]), "holdout:", *_ds(info["holdout_dataset"])]
    lines.append(f"params hash {info['params_hash'][:16]}  rounds {info['num_boost_round']}  code hash {info['code_hash'][:16]}")
    params = info["params"] or {}
    lines.append("params: " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    holdout = {m["name"]: m["value"] for m in info["metrics"] if m["scope"] == "holdout"}
    if holdout:
        lines.append("holdout metrics: " + "  ".join(f"{k} {fmt(v)}" for k, v in holdout.items()))
    lines.append("decisions:")
    lines += [f"  {_when(e['at'])}  {e['action']:<14} {e['actor']:<24} {(e['reason'] or '')[:80]}" for e in info["decisions"]]
    for p in info["production_periods"]:
        lines.append(f"in production {_when(p['from'])} -> {_when(p['until']) if p['until'] else 'now'}")
    click.echo("\n".join(lines))


@click.command("trace")
@click.argument("row_id")
@click.option("--batch", help="Dataset version (hash or prefix) or the batch file.")
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def trace_cmd(row_id: str, batch: str | None, config: str, as_json: bool) -> None:
    """From one prediction to the model version, its training data, the run and the approval."""
    from keel.core.registry.lineage import trace

    found = trace(_store(config), row_id, batch)
    if as_json:
        emit_json(found)
        return
    for t in found:
        m, a = t["model"], t["approval"]
        lines = [f"row {t['row_id']}: score {fmt(t['score'], 4)}  label {t['label']}  actual {fmt(t['actual'])}",
                 "batch:", *_ds(t["batch"]),
                 f"predicted by {m['name']} v{m['version']} ({m['status']})  sha256 {m['sha256'][:16]}",
                 f"  in run: {_run(t['prediction_run'])}",
                 "trained on:", *_ds(t["training_data"]),
                 f"  by run: {_run(t['training_run'])}"]
        if a:
            lines.append(f"put in production: {_when(a['at'])}  {a['action']} by {a['actor']}: {(a['reason'] or '')[:100]}")
            lines += [f"  approved by {v['actor']}: {v['reason']}" for v in a.get("approvals") or []]
        else:
            lines.append("put in production: never (no promotion recorded)")
        click.echo("\n".join(lines) + "\n")


@click.command("score")
@click.argument("batch", type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=str), help="Also write predictions (.parquet or .csv).")
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def score_cmd(batch: str, out: str | None, config: str, as_json: bool) -> None:
    """Score BATCH with the production model; predictions are stored with row id and model version."""
    from keel.core.model.scoring import score_batch
    from keel.core.workspace import Workspace

    summary = score_batch(Workspace.open(config), batch, out)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"scored {summary['scored']} rows of {batch} with {summary['model']} v{summary['model_version']}"
               f" (dataset {summary['dataset_version'][:12]}, run {summary['run_id']})"
               + (f"; {summary['skipped_rows']} rows broke the contract and were skipped" if summary["skipped_rows"] else "")
               + (f"; written to {out}" if out else ""))


COMMANDS = [lineage_cmd, trace_cmd, score_cmd]
