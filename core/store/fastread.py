"""The runs page read straight from SQLite with the standard library, for a fast TUI start-up.

Importing SQLAlchemy, SQLModel and pydantic costs more than the 1 s the first screen may take, so
the first page of runs on the embedded store comes through ``sqlite3``; every other read goes
through keel.core.store.queries. Rows have the shape of ``queries.runs_page``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tomllib
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

COUNT_CAP = 500  # the same cap as keel.core.store.queries


def store_url(config_path: Path | None) -> str:
    """The store's URL as keel resolves it: keel.toml [store], then KEEL_DATABASE_URL, then KEEL_HOME."""
    if config_path is not None and config_path.exists():
        try:
            url = tomllib.loads(config_path.read_text()).get("store", {}).get("database_url")
        except (tomllib.TOMLDecodeError, OSError, AttributeError):
            url = None
        if url:
            return str(url)
    if os.environ.get("KEEL_DATABASE_URL"):
        return os.environ["KEEL_DATABASE_URL"]
    home = Path(os.environ.get("KEEL_HOME") or ".keel").expanduser().resolve()
    return f"sqlite:///{home / 'keel.db'}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, without its query (``?timeout=5``); None for other stores."""
    return Path(url[len("sqlite:///"):].split("?", 1)[0]) if url.startswith("sqlite:///") else None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None


def runs_page(db: Path, limit: int = 100, offset: int = 0, text: str | None = None) -> dict[str, Any] | None:
    """One page of runs, newest first, with the capped count; None when the store has no runs table yet."""
    if not db.exists():
        return {"rows": [], "total": 0, "more": False, "offset": offset}
    where, args = "", []
    if text:
        where = ("WHERE source LIKE ? OR status LIKE ? OR decision LIKE ? OR model_name LIKE ? OR id LIKE ?")
        like = f"%{text}%"
        args = [like, like, like, like, f"{text}%"]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT id, flow_run_id, model_name, source, batch_id, status, decision, summary, replay_of, "
            f"started_at, finished_at, error FROM pipeline_run {where} ORDER BY started_at DESC LIMIT ? OFFSET ?",
            [*args, limit, offset]).fetchall()
        cap = max(COUNT_CAP, offset + limit)
        n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM pipeline_run {where} LIMIT ?)", [*args, cap + 1]
                         ).fetchone()[0]
    except sqlite3.OperationalError:
        return None  # not a keel store yet (or an older schema): the ORM path will say what is wrong
    finally:
        conn.close()
    out = []
    for (run_id, flow_run_id, model, source, batch_id, status, decision, summary, replay_of, started, finished,
         error) in rows:
        s = json.loads(summary) if summary else {}
        s = s or {}
        drift = s.get("drift") or {}
        out.append({
            "run_id": run_id, "flow_run_id": flow_run_id, "model": model, "source": source,
            "batch": PurePath(source).name if source else "-", "dataset_version": batch_id, "status": status,
            "decision": decision, "drifted": len(drift.get("drifted") or []), "metrics": s.get("metrics"),
            "model_version": s.get("model_version"), "production_version": s.get("production_version"),
            "replay_of": replay_of, "started_at": _when(started), "finished_at": _when(finished), "error": error,
        })
    return {"rows": out, "total": min(n, cap), "more": n > cap, "offset": offset}
