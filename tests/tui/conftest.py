"""Fixtures for the TUI tests: one seeded store per session, copied fresh for every test."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tui import world


def me() -> str:
    """The operating-system user the registry sees (nothing lets a test act as someone else)."""
    from keel.core.actor import current_actor

    return current_actor()


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template: a folder holding keel.toml, the batches and .keel (store and artifacts)."""
    from keel.core.store.engine import dispose_engines

    root = tmp_path_factory.mktemp("tui-world")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEEL_HOME", str(root / ".keel"))
        mp.delenv("SSH_CLIENT", raising=False)
        mp.delenv("SSH_CONNECTION", raising=False)
        world.build(root, [me()], mp)
        dispose_engines()
    return root


@pytest.fixture
def store(seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """make(approvers) -> keel.toml of a fresh copy of the seeded store (default approver: this OS user)."""
    from keel.core.store.engine import dispose_engines

    home = tmp_path / ".keel"
    shutil.copytree(seeded / ".keel", home, ignore=shutil.ignore_patterns("artifacts"))
    monkeypatch.setenv("KEEL_HOME", str(home))
    monkeypatch.setenv("KEEL_ARTIFACTS_URL", str(seeded / ".keel" / "artifacts"))
    monkeypatch.delenv("SSH_CLIENT", raising=False)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.chdir(tmp_path)

    def make(approvers: list[str] | None = None) -> Path:
        return world.write_config(tmp_path, [me()] if approvers is None else approvers)

    yield make
    dispose_engines()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
