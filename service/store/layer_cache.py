"""The wire JSON of layer rows, full and brief, encoded once per process and kept by row.

A stored layer never changes once committed (rows are only inserted), so the bytes that
``LayerRow.model_dump_json()`` (or ``LayerBrief``'s) gives for it are the same on every
request. A page of ``GET /v1/layers`` is then the concatenation of its rows' cached JSON: no
decompression, no validation and no encoding for a row seen before (docs/reliability.md,
"The load benchmark"). The key names the view and carries the row's job and creation time
beside its id, so an id that SQLite hands out again after a row was deleted by hand never
serves the old row's bytes.

The cache is bounded in bytes and drops the least recently used rows first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

from api_schemas.enums import LayerView

LayerKey = tuple[LayerView, int, str, datetime]


class LayerJsonCache:
    """At most ``max_bytes`` of row JSON; ``max_bytes == 0`` keeps nothing."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[LayerKey, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, keys: Iterable[LayerKey]) -> dict[LayerKey, bytes]:
        """The cached JSON of those of ``keys`` that are here (each marked as just used)."""
        found: dict[LayerKey, bytes] = {}
        with self._lock:
            for key in keys:
                fragment = self._rows.get(key)
                if fragment is None:
                    self.misses += 1
                    continue
                self._rows.move_to_end(key)
                found[key] = fragment
                self.hits += 1
        return found

    def put(self, key: LayerKey, fragment: bytes) -> None:
        if len(fragment) > self.max_bytes:
            return
        with self._lock:
            old = self._rows.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._rows[key] = fragment
            self.bytes += len(fragment)
            while self.bytes > self.max_bytes:
                _, dropped = self._rows.popitem(last=False)
                self.bytes -= len(dropped)
