"""The static checks that need keel laid out as it installs:

    python scripts/lint.py imports [lint-imports options]   # the import-linter contracts in pyproject.toml
    python scripts/lint.py types [mypy options]             # mypy over keel.core, or the -p/-m given

core/, flows/, tui/ and cli/ install as keel.core, keel.flows, keel.tui and keel.cli through setuptools'
package-dir. An editable install serves that mapping through an import hook, which neither grimp
(import-linter's graph builder: it walks the directory of the `keel` package alone, where it finds
keel/__init__.py and nothing of core/) nor mypy (it runs no import hooks) follows. So this lays out the
installed tree in a scratch directory (keel/ with core, flows, tui and cli as symbolic links, read from the
package-dir table in pyproject.toml, so it follows any change there), runs the tool from there, and prints its
report with the scratch paths turned back into the checkout's (keel/core/x.py -> core/x.py). The exit status
is the tool's; 2 when it is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def package_dirs() -> dict[str, str]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]


def lay_out(into: Path) -> None:
    """Links each package-dir entry to where it installs under `into` (keel/core -> <checkout>/core, ...)."""
    mapping = package_dirs()
    top = into / "keel"
    top.mkdir()
    for item in (ROOT / mapping["keel"]).iterdir():  # keel/__init__.py, keel/__main__.py, keel/py.typed
        if item.is_file():
            (top / item.name).symlink_to(item)
    for package, source in mapping.items():
        if package != "keel":
            target = into.joinpath(*package.split("."))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(ROOT / source, target_is_directory=True)


def checkout_paths(text: str) -> str:
    """keel/core/config.py -> core/config.py, for each package-dir entry (the deepest first)."""
    for package, source in sorted(package_dirs().items(), key=lambda item: -item[0].count(".")):
        text = text.replace(package.replace(".", "/") + "/", source.rstrip("/") + "/")
    return text


def tool(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def run(command: list[str], scratch: Path) -> int:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MYPYPATH", None)
    result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
    sys.stdout.write(checkout_paths(result.stdout))
    sys.stderr.write(checkout_paths(result.stderr))
    return result.returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("imports", "types"):
        print(__doc__, file=sys.stderr)
        return 2
    which, rest = argv[0], argv[1:]
    name = "lint-imports" if which == "imports" else "mypy"
    executable = tool(name)
    if executable is None:
        print(f"{name} is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="keel-lint-") as scratch:
        lay_out(Path(scratch))
        # both tools put their working directory first on the import path, ahead of the editable install's hook
        if which == "imports":
            command = [executable, str(PYPROJECT), "--no-cache", "--no-logo", *rest]
        else:
            targets = [] if {"-p", "--package", "-m", "--module"} & set(rest) else ["-p", "keel.core"]
            command = [executable, "--config-file", str(PYPROJECT), "--cache-dir", str(ROOT / ".mypy_cache"),
                       *targets, *rest]
        return run(command, Path(scratch))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
