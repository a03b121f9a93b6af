"""Crash points: named places where keel can be made to kill itself, to prove that a run killed anywhere and
started again ends where a run never killed ends (tests/reliability/test_crash_points.py).

A point does nothing unless the environment variable KEEL_CRASH_AT names it, which only the crash tests set;
then the process sends itself SIGKILL there: no clean-up, no exception handler, no atexit, as when the
kernel's OOM killer or a lost machine stops a run.

They are also where a Ctrl-C that Python swallowed takes effect: keel's commands handle SIGINT with
:func:`interrupt`, which raises KeyboardInterrupt as Python's own handler does and notes it. Raised inside a
finalizer or a weakref callback, that exception is printed as "Exception ignored" and lost, and the run would go
on to the end; the next crash point (every stage has two) raises it again, so the run stops at a point it is
built to restart from.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

CRASH_AT = "KEEL_CRASH_AT"


_INTERRUPTED: list[int] = []


def interrupt(signum: int, frame: Any) -> None:
    """SIGINT's handler in a keel command: KeyboardInterrupt, noted for the next crash point."""
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt


def crash_point(name: str) -> None:
    """Die here, at once, if KEEL_CRASH_AT is ``name``; raise KeyboardInterrupt here if a Ctrl-C came and was
    swallowed (not while an exception is being handled: that may be the interrupt itself, unwinding)."""
    if _INTERRUPTED and sys.exc_info()[0] is None:
        _INTERRUPTED.clear()
        raise KeyboardInterrupt
    if os.environ.get(CRASH_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
