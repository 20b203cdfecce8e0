"""What the client commands print: tables that never cut a cell, JSON lines, and progress
that is a live bar on a terminal and plain lines in a log."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from pydantic import BaseModel

from api_schemas import Job


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, ``-`` for missing values."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Columns as wide as their widest cell (names are never cut); the last is not padded."""
    table = [list(headers)] + [[fmt(cell) for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    widths[-1] = 0
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def print_json(value: BaseModel | dict[str, Any] | list[Any]) -> None:
    """One JSON document on one line."""
    if isinstance(value, BaseModel):
        print(value.model_dump_json())
    else:
        print(json.dumps(value, default=str))


def exit_code(state: str) -> int:
    """0 for a job that succeeded or is still queued or running; 1 for failed or cancelled."""
    return 1 if state in ("failed", "cancelled") else 0


def job_line(job: Job) -> str:
    """``ID STATE DONE/TOTAL``, then the error of a failed job."""
    text = f"{job.id} {job.state}"
    if job.progress.total:
        text += f" {job.progress.done}/{job.progress.total}"
    return text + (f": {job.error}" if job.error else "")


class JobProgressView:
    """A tqdm bar when ``stream`` is a terminal; otherwise one plain line per change (no
    carriage returns in log files)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.live = self.stream.isatty()
        self.last: tuple[str, int, int] | None = None
        self.bar: Any = None
        if self.live:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="layer", desc=label, file=self.stream)

    def show(self, job: Job) -> None:
        state, done, total = job.state, job.progress.done, job.progress.total
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(state)
            self.bar.refresh()
        elif (state, done, total) != self.last:
            print(f"{self.label} {state} {done}/{total} layers", file=self.stream, flush=True)
        self.last = (state, done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LayerProgressView:
    """Local profiling progress: a tqdm bar on a terminal, else one plain line per layer."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar: Any = None
        if not quiet and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="layer", file=self.stream, desc="profiling")

    def __call__(self, name: str, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.set_postfix_str(name)
            self.bar.update(done - self.bar.n)
        elif not self.quiet:
            print(f"profiling {done}/{total} layers: {name}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
