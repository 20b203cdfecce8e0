"""Planner statistics kept fresh as the layer table grows, off the request path.

``db.refresh_statistics`` (``ANALYZE``) runs when the leader starts (service/leader.py). A
store that grows while the server runs would keep the start-up statistics: SQLite has no
others until asked, and PostgreSQL's autovacuum analyzes only after a fraction of the table
has changed. The leader therefore polls the layer table's size every ``poll_s`` seconds on a
thread of its own and analyzes again once it has grown by ``min(every_rows, max(rows,
min_rows))`` rows since the last time: every 10⁴ new rows on a large store, each doubling on
a small one. The size is ``max(id)``: rows are only inserted, ids only grow, and the primary
key answers it at once on both databases.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import KW_ONLY, dataclass, field

from sqlalchemy import Engine, func, select

from service.store import db
from service.store.models import LayerResultRow

log = logging.getLogger("curvprof.store")


@dataclass(eq=False)
class StatisticsRefresher:
    """``ANALYZE`` again after enough new layer rows; :meth:`check` once, or poll on a thread."""

    engine: Engine
    _: KW_ONLY
    every_rows: int = 10_000
    min_rows: int = 100
    poll_s: float = 30.0
    analyzed_rows: int | None = field(default=None, init=False)
    """the table's size at the last ANALYZE"""
    refreshes: int = field(default=0, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.coalesce(func.max(LayerResultRow.id), 0))) or 0)

    def due(self, rows: int) -> bool:
        if self.analyzed_rows is None:
            return True
        grown = rows - self.analyzed_rows
        return grown > 0 and grown >= min(self.every_rows, max(self.analyzed_rows, self.min_rows))

    def refresh(self) -> None:
        rows = self.rows()
        db.refresh_statistics(self.engine)
        self.analyzed_rows = rows
        self.refreshes += 1

    def check(self) -> bool:
        """Analyze if the table has grown enough since the last time; True if it did."""
        rows = self.rows()
        if not self.due(rows):
            return False
        log.info("planner statistics refreshed at %d layer rows", rows)
        self.refresh()
        return True

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="curvprof-analyze", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # a failed refresh only leaves the older statistics
                log.exception("refreshing the planner statistics failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
