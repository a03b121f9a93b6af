"""The static checks hold: ruff (pyflakes, import order, bugbear, pyupgrade), the import-linter contracts
(the layers cli -> flows, tui -> core) and mypy over keel.core. `make lint` runs the same."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str | None:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    return path if path and Path(path).exists() else None


def test_ruff_is_clean():
    ruff = _tool("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "core", "flows", "tui", "cli", "keel", "tests", "bench", "scripts"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept():
    if _tool("lint-imports") is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "scripts/lint.py", "imports"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_mypy_finds_no_error_in_core():
    if _tool("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "scripts/lint.py", "types"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
