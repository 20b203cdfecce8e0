"""The last few values a worker process built, by key: what ``model_cache`` and ``data_cache``
keep so the tasks of one job on one worker open its artifacts once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ProcessCache(Generic[K, V]):
    """At most ``size`` values, least recently used dropped first; ``built`` counts the
    builds this process started (one that raised included)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.built = 0
        self._lock = threading.Lock()
        self._values: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, build: Callable[[], V]) -> V:
        """The value of ``key``, built by ``build`` on first use (under the lock, so two
        tasks of one process never build the same value twice)."""
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
                return value
            self.built += 1
            value = build()
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
