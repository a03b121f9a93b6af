"""The layers hold at run time: core imports no Textual and no flows, flows no Textual, and the TUI and the
CLI start without the heavy libraries. import-linter (`make lint`, tests/test_lint.py) checks the same
boundaries statically; this checks what a real interpreter actually loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = sorted(
    "keel.core." + ".".join(p.relative_to(ROOT / "core").with_suffix("").parts)
    for p in (ROOT / "core").rglob("*.py")
    if p.stem != "__init__" and "migrations" not in p.parts
)


def _loaded_after(statements: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after the statements (run outside the checkout)."""
    code = "import json, sys\n" + "\n".join(statements) + "\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True, check=True,
                         timeout=180)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_every_core_module_imports_no_textual_no_flows_no_tui_no_cli():
    assert len(CORE_MODULES) > 30
    loaded = _loaded_after([f"import {m}" for m in CORE_MODULES])
    assert "textual" not in _packages(loaded)
    assert not {m for m in loaded if m.startswith(("keel.flows", "keel.tui", "keel.cli"))}


def test_flows_import_no_textual_and_no_tui():
    loaded = _loaded_after(["import keel.flows.run_pipeline", "import keel.flows.review_wait"])
    assert "textual" not in _packages(loaded)
    assert not {m for m in loaded if m.startswith(("keel.tui", "keel.cli"))}


def test_tui_start_up_imports_no_lightgbm_alibi_prefect_or_flows():
    loaded = _loaded_after(["import keel.tui.app", "import keel.cli.tui"])
    assert "textual" in _packages(loaded)
    assert not _packages(loaded) & {"lightgbm", "alibi_detect", "prefect"}
    assert not {m for m in loaded if m.startswith("keel.flows")}


def test_tui_start_up_imports_only_the_first_view_and_no_orm():
    loaded = _loaded_after(["import keel.tui.app"])
    screens = {m.rsplit(".", 1)[1] for m in loaded if m.startswith("keel.tui.screens.")}
    assert screens == {"base", "runs"}, "the other views import their screen when first opened"
    assert not _packages(loaded) & {"sqlalchemy", "sqlmodel", "pydantic"}


def test_the_store_queries_the_tui_calls_import_no_heavy_library():
    loaded = _loaded_after(["import keel.core.store.queries, keel.core.config, keel.core.store.engine"])
    assert not _packages(loaded) & {"lightgbm", "alibi_detect", "prefect", "textual"}


@pytest.mark.parametrize("module", ["keel.cli.main"])
def test_cli_start_up_stays_light(module):
    heavy = {"prefect", "lightgbm", "alibi_detect", "textual", "sqlalchemy", "polars"} & _packages(
        _loaded_after([f"import {module}"]))
    assert not heavy, f"importing {module} pulls in {heavy}"
