"""`keel` commands run in forked children of one process that imported keel once.

Each child is a whole keel process, with its own folder, environment, output files and exit status, that can
be killed for real (SIGKILL, from inside at a crash point or from the test); only the imports (about 10 s on
a busy machine) are paid once instead of per command. The parent never opens a store, a Prefect client or a
thread before it forks, so every child starts as clean as a new interpreter would after its imports.

    with ForkedKeel(env) as keel:
        code = keel.run(["run", "batch.parquet"], cwd=project, env={"KEEL_HOME": ...}, log=tmp / "out")
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# what keel.flows.settings.configure_prefect derives from KEEL_HOME: made again in every child
_DERIVED = ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH")


class ForkedKeel:
    """The parent process, driven over a pipe: one JSON request per line in, one exit status per line out."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ForkedKeel:
        self.proc = subprocess.Popen([sys.executable, __file__], env=self.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert ready.strip() == "ready", f"the forking parent did not start: {ready!r}"
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
        """Run `keel *argv` in a child; its exit code, or minus the signal that killed it (-9: SIGKILL).
        The child's stdout and stderr go to `log`.out and `log`.err."""
        assert self.proc is not None
        request = {"argv": argv, "cwd": str(cwd), "env": env, "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        answer = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert answer, "the forking parent died"
        return int(json.loads(answer)["code"])


def _child(request: dict[str, Any]) -> None:
    os.chdir(request["cwd"])
    for key in _DERIVED:
        os.environ.pop(key, None)
    os.environ.update(request["env"])
    for fd, suffix in ((1, ".out"), (2, ".err")):
        target = os.open(request["log"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    from keel.flows.settings import configure_prefect

    configure_prefect()  # this child's KEEL_HOME: its Prefect home and result storage, settings read again
    sys.argv = ["keel", *request["argv"]]
    from keel.cli.main import main

    main()  # exits the child with keel's own exit code


def _serve() -> None:
    import threading

    import lightgbm  # noqa: F401
    import scipy.stats  # noqa: F401
    from alibi_detect.cd import CVMDrift, FETDrift  # noqa: F401  (the default drift engine's detectors)
    from alibi_detect.cd.tabular import TabularDrift  # noqa: F401

    import keel.cli.main  # noqa: F401  (every command registered)
    import keel.cli.pipeline  # noqa: F401
    import keel.core.model.train  # noqa: F401
    import keel.flows.run_pipeline  # noqa: F401  (Prefect, the flow and its tasks)

    assert threading.active_count() == 1, f"threads before fork: {threading.enumerate()}"
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _child(request)
            finally:
                os._exit(70)  # main() did not exit: a bug in the harness, not in keel
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    _serve()
