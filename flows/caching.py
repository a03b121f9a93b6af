"""The cache policy of keel's tasks: inputs, the task's source, and keel's own code.

Every input a task reads is an argument (content hashes, model references and the keel.toml settings
the stage uses), so a changed setting misses the cache of exactly the stages that read it. The workspace
reference is left out: it only says where the store is, and every input is already content-addressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from keel.core.pipeline.code import code_digest


@dataclass
class KeelCode(CachePolicy):
    """keel.core's source and the versions of the libraries that shape results (one digest per process)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return code_digest()


CACHED = (INPUTS - "wsref") + TASK_SOURCE + KeelCode()
