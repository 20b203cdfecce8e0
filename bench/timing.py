"""The timing protocol: each method timed beside one plain gradient taken right before it.

This machine's speed drifts (other processes share the cores), so a raw time says little; the
ratio t(method)/t(gradient) of two runs taken back to back says more, and its median over
repeats is the figure every benchmark case reports (docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def paired(
    method: Callable[[], Any],
    reference: Callable[[], Any],
    repeats: int,
    *,
    warmup: int = 1,
) -> dict[str, Any]:
    """Median over repeats of t(method)/t(reference), the reference timed just before.

    Returns ``ratio`` (median), ``ratios``, ``seconds`` (median raw) and the last output."""
    out = None
    for _ in range(warmup):
        reference()
        out = method()
    ratios, secs, refs = [], [], []
    for _ in range(repeats):
        t_ref, _ = timed(reference)
        t, out = timed(method)
        ratios.append(t / t_ref)
        secs.append(t)
        refs.append(t_ref)
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "seconds": statistics.median(secs),
        "ref_seconds": statistics.median(refs),
        "refs": refs,
        "out": out,
    }


@dataclass(frozen=True)
class Entry:
    """One method of a case's table: its row name, the call to time, how often."""

    name: str
    method: Callable[[], Any]
    repeats: int
    warmup: int = 1


def method_rows(
    entries: Iterable[Entry],
    reference: Callable[[], Any],
    row: Callable[[str, dict[str, Any]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each entry timed with :func:`paired` beside ``reference`` and turned into its row by
    ``row(name, timing)``; a method that raises (a peer that cannot run this model) gets a row
    with the error instead."""
    rows = []
    for entry in entries:
        try:
            timing = paired(entry.method, reference, entry.repeats, warmup=entry.warmup)
        except Exception as exc:
            rows.append({"method": entry.name, "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        rows.append(row(entry.name, timing))
    return rows
