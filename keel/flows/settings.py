"""Prefect's settings for keel: state under KEEL_HOME, telemetry off, quiet logs, persisted results.

Must run before Prefect is imported; a user's own PREFECT_* environment always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from keel.flows.prefect_db import seed


def configure_prefect(home: Path) -> None:
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
    seed(prefect_home)  # a fresh home starts from keel's migrated Prefect database, when one was built
