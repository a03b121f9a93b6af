"""The TUI starts without the heavy libraries, and core never imports Textual (issue 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_tui_start_up_imports_no_lightgbm_alibi_or_prefect_5():
    loaded = _modules_after("import keel.tui.app\nimport keel.cli.tui")
    assert "textual" in loaded
    assert not loaded & {"lightgbm", "alibi_detect", "prefect"}, loaded & {"lightgbm", "alibi_detect", "prefect"}


def test_the_store_queries_the_tui_calls_import_no_heavy_library_5():
    loaded = _modules_after("import keel.core.queries, keel.core.config, keel.core.store.engine")
    assert not loaded & {"lightgbm", "alibi_detect", "prefect", "textual"}


def test_core_never_imports_textual_5():
    modules = sorted(p.stem for p in (ROOT / "keel" / "core").glob("*.py") if p.stem != "__init__")
    loaded = _modules_after("\n".join(f"import keel.core.{m}" for m in modules))
    assert "textual" not in loaded
