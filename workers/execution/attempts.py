"""Task attempts as they happen: Ray retries a task whose worker died without telling the
driver, so every attempt of a layer-group task announces itself to a small ledger actor.

The ledger lives on the driver's node (it must outlive any worker node) and costs no CPU;
a task waits for its announcement to be counted (milliseconds) before it computes.
The driver polls it while it waits for results; every attempt past the first of a group is
reported through ``on_retry`` so the job's progress shows it (``attempts``).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

log = logging.getLogger("curvprof.attempts")


@ray.remote(num_cpus=0, max_restarts=0)
class AttemptLedger:
    """How many times each task key has started."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}

    def started(self, key: str) -> None:
        self.starts[key] = self.starts.get(key, 0) + 1

    def counts(self, keys: list[str]) -> dict[str, int]:
        return {key: self.starts.get(key, 0) for key in keys}

    def forget(self, keys: list[str]) -> None:
        for key in keys:
            self.starts.pop(key, None)


_ledgers: dict[str, Any] = {}


def driver_ledger() -> Any | None:
    """This driver's ledger (created once per Ray session and waited for, so that the first
    tasks' announcements are counted at once), or None if it cannot be made."""
    try:
        context = ray.get_runtime_context()
        session = str(context.get_job_id())
        if session not in _ledgers:
            strategy = NodeAffinitySchedulingStrategy(context.get_node_id(), soft=False)
            _ledgers.clear()
            actor = AttemptLedger.options(scheduling_strategy=strategy)  # type: ignore[attr-defined]
            ledger = actor.remote()
            ray.get(ledger.counts.remote([]), timeout=120)  # up before any task announces
            _ledgers[session] = ledger
        return _ledgers[session]
    except Exception as exc:  # the attempts are a report; the job runs without them
        log.warning("no attempt ledger: %s", exc)
        return None


def announce(ledger: Any | None, key: str, timeout: float = 30.0) -> None:
    """Called by a task as it starts; waits until the ledger has counted it (a call still
    queued in a worker that is then killed would be lost with it)."""
    if ledger is not None:
        with contextlib.suppress(Exception):
            ray.get(ledger.started.remote(key), timeout=timeout)


class AttemptWatch:
    """The driver's view of its tasks' attempts: ``poll()`` reports each new retry.

    Polling never blocks: one ``counts`` request is in flight at a time and is read when it
    is ready (the ledger's worker may take a while to start on a busy node); ``close()``
    asks once more, briefly, so that a retry announced just before the last result arrived
    is reported too."""

    def __init__(self, ledger: Any | None, on_retry: Callable[[list[str]], None] | None) -> None:
        self.ledger = ledger if on_retry is not None else None
        self.on_retry = on_retry
        self.run = uuid.uuid4().hex
        self.seen: dict[str, int] = {}
        self.names: dict[str, list[str]] = {}
        self._inflight: Any | None = None
        self._answered = False

    def key(self, index: int, names: Sequence[str]) -> str:
        key = f"{self.run}:{index}"
        self.names[key] = list(names)
        self.seen[key] = 1
        return key

    def poll(self, wait: float = 0.0) -> None:
        if self.ledger is None or not self.names:
            return
        if self._inflight is None:
            self._inflight = self.ledger.counts.remote(list(self.names))
        ready, _ = ray.wait([self._inflight], timeout=wait)
        if not ready:
            return
        ref, self._inflight = self._inflight, None
        try:
            counts: dict[str, int] = ray.get(ref)
        except Exception as exc:
            log.warning("attempt ledger lost, retries no longer reported: %s", exc)
            self.ledger = None
            return
        self._answered = True
        for key, count in counts.items():
            while count > self.seen[key]:
                self.seen[key] += 1
                assert self.on_retry is not None
                self.on_retry(self.names[key])

    def close(self) -> None:
        if self.ledger is None:
            return
        if self._answered:
            with contextlib.suppress(Exception):
                self._inflight = None
                self.poll(wait=5.0)
        with contextlib.suppress(Exception):
            if self.ledger is not None:
                self.ledger.forget.remote(list(self.names))
