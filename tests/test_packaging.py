"""The wheel installs everything under the one import name `keel`, with its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_only_keel_with_its_migrations_and_stylesheet(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            str(ROOT), "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "setuptools" in build.stderr:  # no setuptools in this environment: build isolated
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(ROOT), "-w",
                                str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("keel-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"keel", next(t for t in top if t.endswith(".dist-info"))}, top
    for package in ("core", "flows", "tui", "cli"):
        assert f"keel/{package}/__init__.py" in names
    assert {"keel/core/store/migrations/env.py", "keel/core/store/migrations/versions/0001_initial_schema.py",
            "keel/tui/app.tcss", "keel/flows/run_pipeline.py", "keel/py.typed"} <= set(names)
