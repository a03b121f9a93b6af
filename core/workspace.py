"""A workspace: one project's configuration with its store and artifact store, opened lazily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from keel.core.config import ProjectConfig, Settings, load_config
from keel.core.data.artifacts import Artifacts
from keel.core.store.engine import get_engine, session_scope


@dataclass
class Workspace:
    """Everything a keel operation needs: config, settings, the store engine and artifacts."""

    cfg: ProjectConfig
    settings: Settings = field(default_factory=Settings)
    config_path: Path | None = None

    @classmethod
    def open(cls, config_path: str | Path | None = None, settings: Settings | None = None) -> Workspace:
        cfg = load_config(config_path)
        path = Path(config_path or "keel.toml").resolve()
        return cls(cfg, cfg.settings(settings), path)

    @cached_property
    def engine(self) -> Engine:
        return get_engine(self.settings.db_url)

    @cached_property
    def artifacts(self) -> Artifacts:
        return Artifacts(self.settings.artifacts_root, self.settings.artifacts_storage_options)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.engine) as session:
            yield session


def open_store(settings: Settings | None = None) -> Engine:
    """The store engine alone, for read commands that need no keel.toml."""
    return get_engine((settings or Settings()).db_url)
