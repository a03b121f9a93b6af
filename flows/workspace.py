"""Opening a keel workspace inside a flow run, from the flow's parameters and the worker's environment."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from keel.core.config import Settings
from keel.core.workspace import Workspace


def workspace_ref(config: str, home: str | None = None) -> str:
    """A JSON reference to a workspace that any worker process can open again."""
    base = Settings(home=Path(home)) if home else Settings()
    ws = Workspace.open(config, base)
    return json.dumps({"config": str(Path(config).resolve()), "home": str(ws.settings.home_path),
                       "db": ws.settings.db_url, "artifacts": ws.settings.artifacts_root}, sort_keys=True)


@lru_cache(maxsize=8)
def open_ref(wsref: str) -> Workspace:
    ref = json.loads(wsref)
    settings = Settings(home=Path(ref["home"]), database_url=ref["db"], artifacts_url=ref["artifacts"])
    return Workspace.open(ref["config"], settings)


def open_workspace(config: str, home: str | None = None) -> Workspace:
    return open_ref(workspace_ref(config, home))
