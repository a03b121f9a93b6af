"""A small bounded, thread-safe in-process memo for answers that cannot change.

keel keeps a few such answers per process: frames of content-addressed dataset versions, a model's
scores on one, a model's calibration, a dataset's batch time. Their keys name immutable things
(content hashes, a database URL and an id), so nothing is ever stale; the bound only caps memory.
The least recently used entry goes first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: Hashable, default: V | None = None) -> V | None:
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def put(self, key: Hashable, value: V) -> V:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The remembered answer for ``key``, or ``make()``'s, remembered (made outside the lock)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        return self.put(key, make())
