"""The cache policy of keel's tasks (inputs, the task's source, and keel's own code) and where their results live.

Every input a task reads is an argument (content hashes, model references and the keel.toml settings
the stage uses), so a changed setting misses the cache of exactly the stages that read it. The workspace
reference is left out: it only says where the store is, and every input is already content-addressed.

Results stay under PREFECT_LOCAL_STORAGE_PATH while the artifact store is local. When it is remote
(KEEL_ARTIFACTS_URL=s3://...), each task runs with its results under ``<artifacts>/prefect-results``
(:func:`with_result_storage`): Prefect keeps a cached result's record at its cache key in the task's
result storage, so a worker on another machine, or a fresh KEEL_HOME, finds it there and replays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from keel.core.config import Settings
from keel.core.errors import map_exceptions, prefect_errors
from keel.core.pipeline.code import code_digest


@dataclass
class KeelCode(CachePolicy):
    """keel.core's source and the versions of the libraries that shape results (one digest per process)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return code_digest()


CACHED = (INPUTS - "wsref") + TASK_SOURCE + KeelCode()


# --- where cached results live ------------------------------------------------------------------------------

RESULTS_FOLDER = "prefect-results"
"""The folder of Prefect's task results (and their cache records) inside a remote artifact store."""

_STORAGE: dict[tuple[str, str, str], Any] = {}


def results_url(settings: Settings) -> str:
    """Where the task results live when the artifact store is remote: a folder beside the artifacts."""
    return f"{settings.artifacts_root}/{RESULTS_FOLDER}"


def result_storage(settings: Settings) -> Any:
    """Prefect's RemoteFileSystem over the remote artifact store's results folder, saved on the current Prefect
    API under a name derived from the URL (Prefect takes only saved blocks as a task's result storage). It holds
    the URL and KEEL_ARTIFACTS_OPTIONS, never credentials: those come from each worker's environment."""
    from prefect.filesystems import RemoteFileSystem
    from prefect.settings import get_current_settings

    basepath, options = results_url(settings), settings.artifacts_storage_options
    api = str(get_current_settings().api.url or "")
    memo = (api, basepath, json.dumps(options, sort_keys=True))
    if memo not in _STORAGE:
        block = RemoteFileSystem(basepath=basepath, settings=options)
        name = "keel-results-" + hashlib.sha256(f"{basepath}\n{memo[2]}".encode()).hexdigest()[:12]
        with map_exceptions(prefect_errors(api or None, f"saving the result storage block {name}")):
            block.save(name, overwrite=True)
        _STORAGE[memo] = block
    return _STORAGE[memo]


def with_result_storage(task: Task[Any, Any], settings: Settings) -> Task[Any, Any]:
    """A task cached across runs (CACHED) with its results, and so its cache records, which Prefect keeps beside
    them, on the remote artifact store, where every worker's cache lookups find them. Unchanged when the store is
    local (results under PREFECT_LOCAL_STORAGE_PATH, as configure_prefect sets) and for the other tasks, whose
    results only serve retries within one flow run."""
    if not settings.artifacts_remote or task.cache_policy is not CACHED:
        return task
    return task.with_options(result_storage=result_storage(settings))
