"""Prefect's settings for keel: state under KEEL_HOME, telemetry off, quiet logs, persisted results.

Every flow file calls :func:`configure_prefect` before it imports Prefect. Where Prefect was imported
first (a worker's flow-run process loads the flow file after Prefect), Prefect's global settings are
read again from the environment. A user's own PREFECT_* environment always wins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from keel.flows.local_server import running
from keel.flows.prefect_db import seed


def configure_prefect(home: Path | None = None) -> None:
    """Keel's defaults for Prefect under `home` (KEEL_HOME when not given); idempotent."""
    if home is None:
        from keel.core.config import Settings

        home = Settings().home_path
    prefect_home = home / "prefect"
    defaults = {
        "PREFECT_HOME": str(prefect_home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_TASKS_REFRESH_CACHE": "false",
        # keel records every stage itself (stage_run): the temporary server need not record task runs or
        # persist events, whose SQLite writes made back-to-back flow runs wait on "database is locked"
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
        # LightGBM's OpenMP threads sleep instead of spinning while they wait (busy machines)
        "OMP_WAIT_POLICY": "passive",
        # Alibi Detect imports transformers, which announces it found no deep-learning framework
        "TRANSFORMERS_VERBOSITY": "error",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    prefect_home = Path(os.environ["PREFECT_HOME"])
    prefect_home.mkdir(parents=True, exist_ok=True)
    if "PREFECT_API_URL" not in os.environ and (server := running(prefect_home)) is not None:
        os.environ["PREFECT_API_URL"] = server.url  # `keel server start` runs one for this home: use it
    seed(prefect_home)  # a fresh home starts from keel's migrated Prefect database, when one was built
    if "prefect.context" in sys.modules:  # Prefect read its settings already: make it read them again
        _refresh_prefect_settings()
    else:  # Prefect, imported later, reads this environment
        _READ[:] = [_prefect_environment()]


_READ: list[str] = []  # the PREFECT_ environment Prefect's settings were last read from, in this process


def _prefect_environment() -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("PREFECT_"))


def _refresh_prefect_settings() -> None:
    """Make Prefect read its settings again (0.15 s) when a PREFECT_ variable changed since it last read them
    (`keel demo` configures Prefect before each of its flow runs; a runner's child has its command's environment)."""
    seen = _prefect_environment()
    if _READ and _READ[0] == seen:
        return
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    _READ[:] = [seen]


_ANSWERED: set[str] = set()


def require_api(api: str | None, timeout: float = 5.0) -> None:
    """Fail in one line, before a flow starts or the store is touched, when PREFECT_API_URL names a server
    that does not answer (no URL: Prefect starts its temporary server). Asked once per process and URL (each
    request made a client of its own, 45 ms): a server lost later fails the next flow run's first request, to
    Prefect's API, before that run writes anything."""
    if not api or api in _ANSWERED:
        return
    import httpx

    from keel.core.errors import PrefectError, reason

    try:
        httpx.get(f"{api.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectError(f"the Prefect API at {api} cannot be reached ({reason(exc)})") from exc
    _ANSWERED.add(api)
