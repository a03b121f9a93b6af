"""keel init: write a commented keel.toml for the user's own data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from keel.core.errors import UsageError


def _toml(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    return json.dumps(value)


def render_config(model: str, target: str, columns: dict[str, str] | None = None, positive: str | None = None) -> str:
    """A keel.toml with the required keys set and every optional key commented with its default."""
    from keel.core.config import ProjectConfig

    lines = ["# keel.toml: how keel treats this model's data. Every commented key shows its default.",
             f"model = {_toml(model)}", f"target = {_toml(target)}"]
    lines.append(f"positive = {_toml(positive)}" if positive else "# positive = \"yes\"    # the positive class; inferred for 0/1, true/false, yes/no")
    for key in ("id", "timestamp"):
        lines.append(f"# {key} = \"\"    # {ProjectConfig.model_fields[key].description}")
    strings = [c for c, t in (columns or {}).items() if t == "string" and c != target]
    lines.append(f"# categorical = {_toml(strings)}    # default: the string columns")
    lines.append("exclude = []    # columns that are never features (leakage, identifiers)")
    for name, field in ProjectConfig.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and hasattr(section, "model_fields")):
            continue
        lines += ["", f"[{name}]", f"# {(section.__doc__ or '').strip()}"]
        for key, sub in section.model_fields.items():
            default = sub.get_default(call_default_factory=True)
            note = f"    # {sub.description}" if sub.description else ""
            lines.append(f"# {key} = {_toml(default)}{note}")
    if columns:
        lines += ["", "# columns seen in the data:"] + [f"#   {c}: {t}" for c, t in columns.items()]
    return "\n".join(lines) + "\n"


@click.command("init")
@click.option("--model", default="my-model", show_default=True, help="Registry name of the model.")
@click.option("--target", default="label", show_default=True, help="Label column.")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), help="A batch to learn the columns from.")
@click.option("--path", "out", default="keel.toml", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_cmd(model: str, target: str, data: Path | None, out: Path, force: bool) -> None:
    """Write a commented keel.toml."""
    if out.exists() and not force:
        raise UsageError(f"{out} exists already (use --force to overwrite)")
    columns = None
    if data is not None:
        from keel.core.data.batches import read_batch
        from keel.core.data.contract import _kind

        frame = read_batch(data)
        if target not in frame.columns:
            raise UsageError(f"--target '{target}' is not a column of {data} ({', '.join(frame.columns[:12])})")
        columns = {c: _kind(frame.schema[c]) for c in frame.columns}
    out.write_text(render_config(model, target, columns))
    from keel.core.config import load_config

    load_config(out)  # what we write must load
    click.echo(f"wrote {out}: edit it, then run 'keel run BATCH --config {out}'")


COMMANDS = [init_cmd]
