"""Prefect flows: thin orchestration over keel.core. Importing this package configures Prefect."""

from __future__ import annotations

from keel.core.config import Settings
from keel.flows.settings import configure_prefect

configure_prefect(Settings().home_path)
