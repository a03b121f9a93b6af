"""Who is acting, and whether they may change production: light enough for the TUI's start-up."""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence


def current_actor() -> str:
    """The operating-system user (from the process's uid, not USER/LOGNAME), with the SSH client address.

    No flag or environment variable changes who acts; the SSH address is sshd's and only annotates.
    """
    try:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover - no passwd entry (some containers) or Windows
        user = getpass.getuser()
    ssh = os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION")
    return f"{user}@{ssh.split()[0]}" if ssh else user


def user_of(actor: str) -> str:
    """The bare user name of an actor string ("alice@10.0.0.5" -> "alice")."""
    return actor.split("@", 1)[0].removesuffix(" (pipeline)")


def may_act(approvers: Sequence[str], actor: str | None = None) -> tuple[bool, str]:
    """Whether the actor may approve, reject, promote and roll back, and why not."""
    actor = actor or current_actor()
    if not approvers or user_of(actor) in approvers:
        return True, ""
    return False, f"{user_of(actor)} is not an approver ({', '.join(approvers)})"
