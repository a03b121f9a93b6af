"""The layers hold: core imports no Textual and no flows; flows import no Textual."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE_MODULES = ["keel.core.config", "keel.core.data", "keel.core.pipeline", "keel.core.registry",
                "keel.core.records", "keel.core.queries", "keel.core.drift", "keel.core.evaluate",
                "keel.core.gate", "keel.core.train", "keel.core.demo"]


def _loaded_after(imports: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in imports) + "print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_core_imports_no_textual_and_no_flows_2():
    loaded = _loaded_after(CORE_MODULES)
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}
    assert not {m for m in loaded if m.startswith(("keel.flows", "keel.tui", "keel.cli"))}


def test_flows_import_no_textual_2():
    loaded = _loaded_after(["keel.flows.run_pipeline"])
    assert "textual" not in loaded and not {m for m in loaded if m.startswith("keel.tui")}


@pytest.mark.parametrize("module", ["keel.cli.main"])
def test_cli_start_up_stays_light_2(module):
    loaded = _loaded_after([module])
    heavy = {"prefect", "lightgbm", "alibi_detect", "textual", "sqlalchemy", "polars"} & loaded
    assert not heavy, f"importing {module} pulls in {heavy}"
