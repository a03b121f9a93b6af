"""What the TUI works against: the store engine, the workspace (for actions) and the operator's rights.

Everything here is resolved lazily, from workers, so the App paints before the store is touched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from keel.core.workspace import Workspace


@dataclass
class TuiContext:
    """The TUI's link to keel.core: ``config_path`` None means browse KEEL_HOME read-only."""

    config_path: Path | None = None
    read_only: bool = False
    refresh: float = 10.0
    allowed: bool | None = None  # None until the rights are known
    why: str = "checking the operator's rights"
    actor: str = ""
    _engine: Any = None
    _ws: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from keel.core.config import Settings, load_config
                from keel.core.store.engine import get_engine

                settings = load_config(self.config_path).settings() if self.config_path else Settings()
                self._engine = get_engine(settings.db_url)
            return self._engine

    def workspace(self) -> Workspace:
        from keel.core.errors import UsageError

        if self.config_path is None:
            raise UsageError("no keel.toml: the TUI is browsing the store read-only", title="Read-only")
        with self._lock:
            if self._ws is None:
                from keel.core.workspace import Workspace

                self._ws = Workspace.open(self.config_path)
            return self._ws

    def resolve_rights(self) -> tuple[bool, str, str]:
        """(may act, why not, actor) through registry.may_act; runs in a worker."""
        from keel.core.actor import current_actor, may_act

        actor = current_actor()
        if self.read_only:
            return False, "read-only mode (--read-only)", actor
        if self.config_path is None:
            return False, "read-only: no keel.toml, browsing the store under KEEL_HOME", actor
        from keel.core.config import load_config  # the config alone: the store is not needed to know who may act

        ok, why = may_act(load_config(self.config_path).review.approvers, actor)
        return ok, why, actor

    @property
    def can_act(self) -> bool:
        return bool(self.allowed) and not self.read_only
