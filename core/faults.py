"""Crash points: named places where keel can be made to kill itself, to prove that a run killed anywhere and
started again ends where a run never killed ends (tests/reliability/test_crash_points.py).

A point does nothing unless the environment variable KEEL_CRASH_AT names it, which only the crash tests set;
then the process sends itself SIGKILL there: no clean-up, no exception handler, no atexit, as when the
kernel's OOM killer or a lost machine stops a run.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "KEEL_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here, at once, if KEEL_CRASH_AT is ``name``."""
    if os.environ.get(CRASH_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
