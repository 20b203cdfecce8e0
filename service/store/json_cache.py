"""The wire JSON of stored rows, encoded once per process and kept by a key that pins it.

A row's JSON is a pure function of what the key names, so the bytes ``model_dump_json()``
gives are the same on every request that meets the same key, and a page is the
concatenation of its rows' cached JSON: no decompression, no validation and no encoding for
a row seen before (docs/reliability.md, "The load benchmark"). Two keys are in use:

- a layer row never changes once committed (rows are only inserted): its key names the view
  and carries its job and creation time beside its id (``queries.LayerKey``), so an id that
  SQLite hands out again after a row was deleted by hand never serves the old row's bytes;
- a job row does change (state, times, error, progress): its key is every value its JSON is
  built from (``job_pages.JobKey``), so any change is a new key and the old one ages out.

The cache is bounded in bytes (each entry's JSON plus what its key holds) and drops the
least recently used entries first.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class RowJsonCache(Generic[K]):
    """At most ``max_bytes`` of row JSON; ``max_bytes == 0`` keeps nothing."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[K, tuple[bytes, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, keys: Iterable[K]) -> dict[K, bytes]:
        """The cached JSON of those of ``keys`` that are here (each marked as just used)."""
        found: dict[K, bytes] = {}
        with self._lock:
            for key in keys:
                entry = self._rows.get(key)
                if entry is None:
                    self.misses += 1
                    continue
                self._rows.move_to_end(key)
                found[key] = entry[0]
                self.hits += 1
        return found

    def put(self, key: K, fragment: bytes, key_bytes: int = 0) -> None:
        """Keep ``fragment`` under ``key``; ``key_bytes`` counts what the key itself holds
        (a job key's spec text) against the bound."""
        size = len(fragment) + key_bytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._rows.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._rows[key] = (fragment, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._rows.popitem(last=False)
                self.bytes -= dropped


def page_json(fragments: Iterable[bytes], next_cursor: str | None) -> bytes:
    """The JSON of a ``Page`` whose items' JSON are ``fragments``, byte for byte as
    ``Page.model_dump_json()`` writes it, in one copy."""
    parts = [b'{"items":[']
    for i, fragment in enumerate(fragments):
        parts += (b",", fragment) if i else (fragment,)
    parts += (
        b'],"next_cursor":',
        b"null" if next_cursor is None else json.dumps(next_cursor).encode(),
        b"}",
    )
    return b"".join(parts)
