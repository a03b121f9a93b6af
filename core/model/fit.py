"""LightGBM's fit in a child process, so a training job that runs out of memory fails the train stage, not keel.

When the kernel refuses an allocation (an address-space limit, a container's memory limit) LightGBM does not
always raise: its aligned allocator returns NULL unchecked and the process dies of SIGSEGV, polars aborts,
and the OOM killer sends SIGKILL. In the pipeline's own process any of these would take the run down with
no failure recorded. The child does the fit only; the parent gets the model text and the importances back,
or the child's error (MemoryError, LightGBMError) by name, or the signal that killed it, all turned into one
ModelError naming the stage ("train: out of memory ..."). Run as ``python -m keel.core.model.fit``: inputs
are a pickle on stdin, the answer a pickle on stdout (both from and for this module only).
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
import subprocess
import sys
from typing import Any

import numpy as np

from keel.core.errors import ModelError, lightgbm_errors, map_exceptions

log = logging.getLogger("keel.lightgbm")


def fit(X: np.ndarray, y: np.ndarray, features: list[str], cat_idx: list[int], params: dict[str, Any],
        num_boost_round: int) -> tuple[str, list[float]]:
    """The booster's text and its gain importances, fitted in a child process; a failure is a ModelError."""
    payload = pickle.dumps((X, y, features, cat_idx, params, num_boost_round), protocol=pickle.HIGHEST_PROTOCOL)
    proc = _take_warm() or _spawn()
    out, err = proc.communicate(payload)
    errors = err.decode(errors="replace").strip()
    if errors:  # LightGBM's own prints: the log, never the terminal (keel reports its one line)
        log.debug("%s", errors)
    answer = _answer(out)
    if answer is None:
        last = errors.splitlines()[-1] if errors else ""
        why = _died(proc.returncode, last)
        raise ModelError(why, title="Out of memory" if "out of memory" in why else None)
    kind, *rest = answer
    if kind == "ok":
        return rest[0], rest[1]
    with map_exceptions(lightgbm_errors("training", step="train")):
        _raise(kind, rest[0])
    raise AssertionError("unreachable")  # pragma: no cover


def _spawn() -> subprocess.Popen[bytes]:
    """A training process: it imports LightGBM, then waits for its inputs on stdin."""
    # one OpenBLAS thread: the fit does no BLAS work, and OpenBLAS's per-thread buffers, allocated at import, spin
    # forever when a memory limit refuses them
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    return subprocess.Popen([sys.executable, "-m", "keel.core.model.fit"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


_WARM: list[tuple[int, subprocess.Popen[bytes]]] = []  # (the pid that started it, the training process)
_DISCARD_AT_EXIT: list[Any] = []


def warm_up() -> None:
    """Start the next fit's training process now: its interpreter start and LightGBM import (0.3 to 0.5 s) then
    run beside the work before the fit (building the training set) instead of before the fit. Each process still
    serves one fit; one left unused is ended when keel exits (its stdin closes: it answers nothing and exits)."""
    if not any(pid == os.getpid() for pid, _ in _WARM):
        if not _DISCARD_AT_EXIT:
            _DISCARD_AT_EXIT.append(atexit.register(_discard))
        _WARM.append((os.getpid(), _spawn()))


def _take_warm() -> subprocess.Popen[bytes] | None:
    """The training process warm_up started in this process (not in a parent it was forked from), if alive."""
    while _WARM:
        pid, proc = _WARM.pop()
        if pid == os.getpid() and proc.poll() is None:
            return proc
    return None


def _discard() -> None:
    for pid, proc in _WARM:
        if pid == os.getpid() and proc.poll() is None:
            proc.kill()
            proc.wait()
    _WARM.clear()


def _answer(out: bytes) -> tuple[Any, ...] | None:
    try:
        return pickle.loads(out) if out else None  # noqa: S301 - our own child's answer
    except Exception:
        return None


def _raise(kind: str, message: str) -> None:
    """The child's error again, as its own class, so the one mapping of LightGBM's errors applies."""
    if kind == "memory":
        raise MemoryError(message)
    if kind == "lightgbm":
        import lightgbm

        raise lightgbm.basic.LightGBMError(message)
    raise ModelError(f"train: training failed: {message}")


def _died(code: int, last: str) -> str:
    """Why the training process gave no answer: killed by a signal, or an error before it could answer (its last
    line of stderr, e.g. a MemoryError while importing LightGBM under a tight limit)."""
    if code < 0:
        name = signal.Signals(-code).name
        return (f"train: out of memory, most likely: the training process was killed by {name} (LightGBM crashes "
                "instead of raising when the kernel refuses its memory; the OOM killer sends SIGKILL)")
    if "MemoryError" in last:
        return f"train: out of memory while starting the training process ({last[:200]})"
    return f"train: the training process exited with status {code} without an answer ({last[:200] or 'no output'})"


def _child() -> None:
    """Read the inputs, fit, answer. Anything LightGBM prints goes to stderr: stdout carries the answer only."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    answer: tuple[Any, ...]
    # LightGBM probes its optional integrations at import (2.0 of its 2.4 s here); the child fits numpy arrays only
    for name in ("pandas", "sklearn", "dask", "pyarrow", "cffi"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import name" raises ImportError
    try:
        import lightgbm  # before the inputs: a process started ahead of its fit (warm_up) imports while it waits

        inputs = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - our own parent's inputs
        X, y, features, cat_idx, params, rounds = inputs
        data = lightgbm.Dataset(X, label=y, feature_name=features, categorical_feature=cat_idx, free_raw_data=True,
                                params={"verbosity": -1})
        booster = lightgbm.train(params, data, num_boost_round=rounds)
        answer = ("ok", booster.model_to_string(), booster.feature_importance(importance_type="gain").tolist())
    except MemoryError as exc:
        answer = ("memory", str(exc))
    except Exception as exc:
        kind = "lightgbm" if type(exc).__name__ == "LightGBMError" else "error"
        answer = (kind, str(exc) if kind == "lightgbm" else f"{type(exc).__name__}: {exc}")
    with os.fdopen(answer_fd, "wb") as out:
        out.write(pickle.dumps(answer))


if __name__ == "__main__":
    _child()
    # answered: end now, without the interpreter's teardown (LightGBM's and numpy's modules and threads), which the
    # parent would otherwise wait for, as the process's stderr stays open until it exits
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
