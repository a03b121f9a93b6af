"""keel's exception hierarchy (every error a user can cause, with its exit code) and the one place
where a lower layer's errors become keel's.

The CLI maps these to one clear line and an exit code; the TUI shows ``title`` over the message.
Lower-layer errors (SQLAlchemy and its drivers, the Prefect client and httpx, LightGBM, the file
system under the artifact store) are translated at their boundary by ``map_exceptions`` with the
mappings at the end of this module, never leaked. The mappings name library classes by dotted path
and look them up among the modules already imported, so this module imports none of those libraries.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager


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
    """Raised when the store cannot be opened or written. ``transient`` when trying again can work (the store
    locked by another writer, the connection dropped, the server unreachable), until the retries are spent."""

    title = "Store error"

    def __init__(self, message: str, title: str | None = None, *, transient: bool = False) -> None:
        super().__init__(message, title)
        self.transient = transient


class ArtifactError(StoreError):
    """Raised when the artifact folder cannot be read or written (permissions, a full or read-only disk)."""

    title = "Artifact store error"


class ChecksumMismatch(KeelError):
    """Raised when an artifact's SHA-256 or the audit chain does not verify (or the artifact is gone)."""

    exit_code = 1
    title = "Integrity check failed"


class ModelError(KeelError):
    """Raised when LightGBM fails to train or load a model; the message names the stage."""

    title = "Model error"


class PrefectError(KeelError):
    """Raised when the Prefect API cannot be reached or refuses a request."""

    title = "Prefect unavailable"


# --- translating lower layers' errors ------------------------------------------------------------

Translate = Callable[[BaseException], KeelError]
"""Builds the keel error a library exception becomes, with a one-line message naming what failed."""


def translated(exc: BaseException, mapping: Mapping[str, Translate]) -> KeelError | None:
    """The keel error ``mapping`` makes of ``exc`` (the entry of its most specific class), or None.

    Keys name exception classes by dotted path, e.g. ``sqlalchemy.exc.OperationalError``. A class whose
    module is not imported cannot have been raised, so it is looked up in ``sys.modules``, never imported.
    """
    mro = type(exc).__mro__
    best: Translate | None = None
    rank = len(mro)
    for name, translate in mapping.items():
        module, _, attr = name.rpartition(".")
        cls = getattr(sys.modules.get(module), attr, None)
        if cls in mro and mro.index(cls) < rank:
            best, rank = translate, mro.index(cls)
    return best(exc) if best is not None else None


@contextmanager
def map_exceptions(mapping: Mapping[str, Translate]) -> Iterator[None]:
    """Translate a lower layer's exceptions into keel's where that layer is called (httpx's map_exceptions).

    keel's own errors and anything ``mapping`` does not name pass through unchanged; the library's
    exception stays as ``__cause__`` (shown by ``--debug``).
    """
    try:
        yield
    except KeelError:
        raise
    except Exception as exc:
        error = translated(exc, mapping)
        if error is None:
            raise
        raise error from exc


def reason(exc: BaseException) -> str:
    """The lower layer's own reason in one short line: the driver's message for a wrapped DBAPI error,
    the OS's for an OSError, LightGBM's without the C++ source location."""
    inner = getattr(exc, "orig", None) or exc  # SQLAlchemy keeps the driver's exception as .orig
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    text = lines[0] if lines else type(inner).__name__
    if " at /" in text and ", line " in text:  # "Check failed: (num_data) > (0) at /src/io/dataset.cpp, line 44 ."
        text = text.split(" at /", 1)[0]
    text = text.split(" (Background on this error at:", 1)[0]  # SQLAlchemy's link to its error guide
    return mask_secrets(text)[:200]


def mask_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: safe to print and log."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL keel can parse (a missing scheme): still no password in "user:password@host"
        head, at, host = url.rpartition("@")
        return f"{head.split(':', 1)[0]}:***@{host}" if at and ":" in head and "/" not in head else url
    if rest.startswith("/") or "@" not in rest:  # a local file (sqlite:////path) has no user part
        return url
    userinfo, host = rest.rsplit("@", 1)
    if ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s@'\"]+@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it (``scheme://user:password@host``) replaced by ``***``: for any
    message that may quote a URL (a driver's, a library's) before it is printed, logged, shown or stored."""
    return _USERINFO.sub(r"\g<head>***@", text) if "://" in text else text


# The store: SQLAlchemy's wrappers and the drivers' own errors (bulk inserts use the driver directly).
STORE_FAILURES = (
    "sqlalchemy.exc.OperationalError", "sqlalchemy.exc.InterfaceError", "sqlalchemy.exc.DisconnectionError",
    "sqlalchemy.exc.TimeoutError", "sqlite3.OperationalError", "psycopg2.OperationalError", "psycopg2.InterfaceError",
)
# Opening it also fails on a bad URL, an unknown dialect, a file that is not a database, a migration
# this keel does not know (a newer store) and a folder that cannot be made.
STORE_OPEN_FAILURES = (
    *STORE_FAILURES, "sqlalchemy.exc.ArgumentError", "sqlalchemy.exc.DatabaseError", "alembic.util.exc.CommandError",
    "builtins.OSError", "builtins.ValueError",  # a URL whose port is not a number
)
_LOCKED = ("database is locked", "database table is locked", "lock not available", "could not obtain lock")
_RACED = ("deadlock detected", "could not serialize access")
_DROPPED = ("server closed the connection", "connection already closed", "terminating connection",
            "connection reset", "ssl connection has been closed", "ssl syscall error", "lost connection")
_UNREACHABLE = ("connection refused", "could not connect", "could not translate host name", "no route to host",
                "name or service not known", "timeout expired", "connection timed out")


def store_errors(url: str, *, opening: bool = False) -> dict[str, Translate]:
    """The store's errors as one line naming the store, its password masked: locked, dropped, unreachable."""
    where = f"the store at {mask_url(url)}"

    def translate(exc: BaseException) -> KeelError:
        why = reason(exc)
        low = why.lower()
        if any(s in low for s in _LOCKED):
            return StoreError(f"{where} is locked by another writer ({why})", transient=True)
        if any(s in low for s in _RACED):  # a lost race on PostgreSQL: trying again can work
            return Conflict(f"another change raced this one in {where} ({why}); look again and retry")
        if getattr(exc, "connection_invalidated", False) or any(s in low for s in _DROPPED):
            return StoreError(f"the connection to {where} was dropped ({why})", transient=True)
        if any(s in low for s in _UNREACHABLE):
            return StoreError(f"cannot connect to {where} ({why})", transient=True)
        return StoreError(f"cannot {'open' if opening else 'use'} {where} ({why})")

    return dict.fromkeys(STORE_OPEN_FAILURES if opening else STORE_FAILURES, translate)


def lost_race(what: str) -> dict[str, Translate]:
    """A unique key broken by a concurrent writer (keel's idempotency lives in unique keys) as a Conflict."""
    return {"sqlalchemy.exc.IntegrityError": lambda exc: Conflict(f"{what} changed while you acted; look again and retry")}


def artifact_errors(root: object, *, writing: bool) -> dict[str, Translate]:
    """The file system's errors under the artifact store as one line naming the file, the store and the OS's reason;
    on object storage also botocore's own (no endpoint, no credentials), which are not OSErrors."""

    def translate(exc: BaseException) -> KeelError:
        path = getattr(exc, "filename", None)
        why = reason(exc)
        if path is None or str(path).startswith(str(root)):
            where = f"{path} in the artifact store at {root}" if path else f"the artifact store at {root}"
            return ArtifactError(f"cannot {'write' if writing else 'read'} {where} ({why})")
        if writing:  # the source of a copy
            return ArtifactError(f"cannot copy {path} into the artifact store at {root} ({why})")
        return ArtifactError(f"cannot read the artifact at {path} ({why})")

    def unreachable(exc: BaseException) -> KeelError:
        return ArtifactError(f"cannot {'write' if writing else 'read'} the artifact store at {root} ({reason(exc)})")

    return {"builtins.OSError": translate, "botocore.exceptions.BotoCoreError": unreachable}


_NO_MEMORY = ("std::bad_alloc", "bad allocation", "out of memory", "cannot allocate memory")


def lightgbm_errors(stage: str, step: str | None = None) -> dict[str, Translate]:
    """LightGBM's errors as one line naming what it was doing (training, loading a model). Running out of memory
    is said as such, first naming the pipeline ``step`` when given ("train: out of memory while training ..."):
    LightGBM reports a refused allocation as LightGBMError('std::bad_alloc'), numpy and Python as MemoryError."""
    where = f"{step}: " if step else ""

    def out_of_memory(exc: BaseException) -> KeelError:
        why = reason(exc) if str(exc) else "no memory left for the process"
        return ModelError(f"{where}out of memory while {stage} ({why}); give the process more memory or train on "
                          "fewer rows", title="Out of memory")

    def failed(exc: BaseException) -> KeelError:
        if any(s in reason(exc).lower() for s in _NO_MEMORY):
            return out_of_memory(exc)
        return ModelError(f"LightGBM failed while {stage}: {reason(exc)}")

    return {"lightgbm.basic.LightGBMError": failed, "builtins.MemoryError": out_of_memory}


def prefect_errors(api: str | None, what: str) -> dict[str, Translate]:
    """The Prefect client's errors (and httpx's under it) as one line naming the API and what was asked."""
    at = f"the Prefect API at {api}" if api else "the Prefect API"

    def refused(exc: BaseException) -> KeelError:
        status = getattr(getattr(exc, "response", None), "status_code", "an error")
        return PrefectError(f"{at} answered {status} for {what}")

    return {
        "httpx.TransportError": lambda exc: PrefectError(f"{at} cannot be reached ({reason(exc)})"),
        "httpx.HTTPStatusError": refused,
        "prefect.exceptions.ObjectNotFound": lambda exc: NotFound(f"{at} does not know {what}"),
        "prefect.exceptions.NotPausedError": lambda exc: Conflict(f"{what} is not paused"),
        "prefect.exceptions.FlowPauseTimeout": lambda exc: Conflict(f"{what} can no longer be resumed: its pause timed out"),
    }
