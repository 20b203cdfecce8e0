"""Which of the server processes sharing a data directory runs the jobs and the store's upkeep.

``curvprof serve --workers N`` starts N processes that all serve the API. Exactly one of
them, the *leader*, also runs the job runner, refreshes the planner statistics and removes
nothing the others need: it is the process that holds an exclusive ``flock`` on
``data_dir/leader.lock``. The others are *followers*: each tries the lock again every
``poll_s`` seconds, so when the leader dies (even by ``kill -9``: the kernel drops the lock
with the process) one follower takes over within ``poll_s`` and resumes the jobs the dead
leader left ``running`` (``JobRunner.start``), as a restarted single server does. Separate
``curvprof serve`` commands on one data directory share the lock too, so a second one never
runs the jobs twice. The lock is per host: servers on several hosts sharing one database
still need exactly one of them with ``CURVPROF_RUN_JOBS=true`` (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("curvprof.app")
LOCK_NAME = "leader.lock"


class Leadership:
    """The lock on ``data_dir/leader.lock``; ``on_elected`` runs once, in the process that
    takes it (at :meth:`start`, or later on the follower's polling thread)."""

    def __init__(self, data_dir: Path, on_elected: Callable[[], None], poll_s: float = 2.0) -> None:
        self.path = data_dir / LOCK_NAME
        self.on_elected = on_elected
        self.poll_s = poll_s
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._fd is not None

    def _try_lock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who leads, for an operator
        self._fd = fd
        return True

    def start(self) -> bool:
        """Lead now if the lock is free (True), else follow: poll for it on a thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._try_lock():
            log.info("process %d leads: it runs the jobs", os.getpid())
            self.on_elected()
            return True
        log.info("process %d follows: another process runs the jobs", os.getpid())
        self._thread = threading.Thread(target=self._follow, name="curvprof-follow", daemon=True)
        self._thread.start()
        return False

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            if not self._try_lock():
                continue
            log.info("process %d took over as leader: it runs the jobs", os.getpid())
            try:
                self.on_elected()
                return
            except Exception:  # e.g. the database away for a moment: let another try
                log.exception("taking over as leader failed; following again")
                self.release()

    def stop(self) -> None:
        """Stop following: no election after this returns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def release(self) -> None:
        """Let the lock go. Call it once the leader's duties have stopped: a follower that
        takes the lock re-queues the jobs left ``running``, and must not find them still
        running here."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
