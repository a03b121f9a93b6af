"""Typed messages: every worker reports back to its screen with one of these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class RightsResolved(Message):
    """The operator's rights are known (registry.may_act)."""

    allowed: bool
    why: str
    actor: str


@dataclass
class PageLoaded(Message):
    """A page of rows for one table of a screen; ``key`` names the table."""

    key: str
    page: dict[str, Any]


@dataclass
class DetailLoaded(Message):
    """A detail record (run, lineage, comparison, ...) for a screen; ``key`` names which."""

    key: str
    data: Any


@dataclass
class ActionDone(Message):
    """A registry action succeeded; ``text`` says what changed.

    ``notes`` and ``warnings`` say what became of the pipeline runs that waited on it: resumed, or
    not (the action stands either way).
    """

    text: str
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
