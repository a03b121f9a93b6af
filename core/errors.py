"""keel's exception hierarchy: every error a user can cause, with its exit code.

The CLI maps these to one clear line and an exit code; the TUI shows ``title`` over the message.
Lower-layer errors (polars, SQLAlchemy, LightGBM) are translated at the boundary, never leaked.
"""

from __future__ import annotations


class KeelError(Exception):
    """Raised for any failure keel can explain in one line."""

    exit_code = 1
    title = "Error"

    def __init__(self, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if title is not None:
            self.title = title

    def __str__(self) -> str:
        return self.message


class UsageError(KeelError):
    """Raised when a command is called with arguments that cannot work (missing file, bad flag)."""

    exit_code = 2
    title = "Usage error"


class ConfigError(UsageError):
    """Raised when keel.toml or a KEEL_ setting is missing, unknown or has a bad value."""

    title = "Configuration error"


class DataError(UsageError):
    """Raised when a batch cannot be read at all (empty, corrupt, unknown format)."""

    title = "Unreadable data"


class DataContractError(KeelError):
    """Raised when a batch breaks the data contract and is quarantined whole."""

    exit_code = 3
    title = "Data rejected"


class NotAuthorized(KeelError):
    """Raised when the acting user may not take the action (not an approver)."""

    exit_code = 4
    title = "Not authorised"


class Conflict(KeelError):
    """Raised when the state changed under the caller (another operator acted first)."""

    exit_code = 5
    title = "Conflict"


class NotFound(UsageError):
    """Raised when a named model, version, run, review or row does not exist."""

    title = "Not found"


class StoreError(KeelError):
    """Raised when the store cannot be opened or written."""

    title = "Store error"


class ChecksumMismatch(KeelError):
    """Raised when an artifact's SHA-256 or the audit chain does not verify (or the artifact is gone)."""

    exit_code = 1
    title = "Integrity check failed"
