"""What the commands print: Rich tables that never cut a name, JSON lines, and progress that
is a live Rich bar (phase, layers, ETA) on a terminal and plain lines in a log."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from io import StringIO
from operator import attrgetter
from typing import Any, TextIO

from pydantic import BaseModel
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api_schemas import Job, LayerProfile
from api_schemas.enums import LAYER_PHASES
from service.cli import EXIT_JOB_FAILED, EXIT_OK

# columns holding names and ids: never wrapped, never cut, on any terminal width
WHOLE_COLUMNS = frozenset({"id", "name", "layer", "layer_id", "checkpoint", "filename", "kind"})
PLAIN_WIDTH = 1 << 16


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, times to the second, ``-`` for missing
    values."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def print_listing(
    items: Sequence[BaseModel], columns: Sequence[tuple[str, str]], as_json: bool = False
) -> None:
    """``items`` as one JSON line each with ``--json``, else :func:`print_table` of them with
    one column per (header, attribute): the attribute's dotted path (``spec.checkpoint_id``)."""
    if as_json:
        for item in items:
            print_json(item)
        return
    getters = [attrgetter(path) for _, path in columns]
    print_table([header for header, _ in columns], ([g(i) for g in getters] for i in items))


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], stream: TextIO | None = None
) -> None:
    """A header line, then one line per row (no borders: ``grep``/``awk`` read it). Names and
    ids are whole: on a narrow terminal the other columns fold instead."""
    out = stream or sys.stdout
    cells = [[fmt(cell) for cell in row] for row in rows]
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for i, header in enumerate(headers):
        widest = max([len(header)] + [len(row[i]) for row in cells])
        if header in WHOLE_COLUMNS:
            table.add_column(header, no_wrap=True, min_width=widest)
        else:
            table.add_column(header, overflow="fold", min_width=max(len(header), min(widest, 8)))
    for row in cells:
        table.add_row(*row)
    if out.isatty():  # the others fold to fit; if names alone are wider, the terminal wraps
        console = Console(file=out)
        unbounded = console.options.update_width(PLAIN_WIDTH)
        console.width = max(console.width, Measurement.get(console, unbounded, table).minimum)
        console.print(table, crop=False)
        return
    buffer = StringIO()
    Console(file=buffer, width=PLAIN_WIDTH, no_color=True, highlight=False).print(table)
    out.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


def print_profile_table(layers: Iterable[LayerProfile]) -> None:
    """The profile's table (``service.report``'s columns): α, γ, s, αγ, errors, bound, PR."""
    from service.report import COLUMNS, layer_row

    print_table([name for name, _ in COLUMNS], [layer_row(layer) for layer in layers])


def print_json(value: BaseModel | dict[str, Any] | list[Any]) -> None:
    """One JSON document on one line."""
    if isinstance(value, BaseModel):
        print(value.model_dump_json())
    else:
        print(json.dumps(value, default=str))


def emit(value: BaseModel | dict[str, Any], as_json: bool, text: str) -> None:
    """``value`` as one JSON line with ``--json``, else ``text``."""
    if as_json:
        print_json(value)
    else:
        print(text)


def exit_code(state: str) -> int:
    """0 for a job that succeeded or is still queued or running; 1 for failed or cancelled."""
    return EXIT_JOB_FAILED if state in ("failed", "cancelled") else EXIT_OK


def job_line(job: Job) -> str:
    """``ID STATE DONE/TOTAL``, then the error of a failed job."""
    text = f"{job.id} {job.state}"
    if job.progress.total:
        text += f" {job.progress.done}/{job.progress.total}"
    return text + (f": {job.error}" if job.error else "")


class Eta:
    """Time left, from the mean time of the layers finished so far (none before the first)."""

    def __init__(self) -> None:
        self.started: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()

    def left(self, done: int, total: int) -> str:
        if self.started is None or done <= 0:
            return "eta after the first layer"
        seconds = (time.monotonic() - self.started) / done * max(total - done, 0)
        return f"eta {timedelta(seconds=round(seconds))}"


def live_bar(stream: TextIO) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("layers"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
        console=Console(file=stream),
        transient=False,
    )


class JobProgressView:
    """A service job's progress: a live bar on a terminal; otherwise one plain line per
    change of state or count (no carriage returns in log files)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.last: tuple[str, int, int] | None = None
        self.eta = Eta()
        self.bar: Progress | None = live_bar(self.stream) if self.stream.isatty() else None
        self.task = None
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(label, total=None, eta="")

    def show(self, job: Job) -> None:
        state, done, total = job.state, job.progress.done, job.progress.total
        if state == "running" and self.eta.started is None:
            self.eta.start()
        if self.bar is not None and self.task is not None:
            running = [layer.name for layer in job.progress.layers if layer.state == "running"]
            at = f": {running[0]}" if running else ""
            at += f" +{len(running) - 1}" if len(running) > 1 else ""
            self.bar.update(
                self.task,
                description=f"{self.label} {state}{at}",
                total=total or None,
                completed=done,
                eta=self.eta.left(done, total) if state == "running" else "",
                refresh=True,  # each poll's state is drawn, not only the last
            )
        elif (state, done, total) != self.last:
            print(f"{self.label} {state} {done}/{total} layers", file=self.stream, flush=True)
        self.last = (state, done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class LayerProgressView:
    """Local profiling progress: the engine's phase (its ``on_phase``), the layers done
    and an ETA; a live bar on a terminal, else one plain line per phase before the first
    layer and one per finished layer."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, total: int = 0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.total = total
        self.done = 0
        self.phase = ""
        self.eta = Eta()
        live = not quiet and self.stream.isatty()
        self.bar: Progress | None = live_bar(self.stream) if live else None
        self.task = None
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("profiling", total=total or None, eta="")

    def on_phase(self, phase: str) -> None:
        """The engine started ``phase``: the layer phases begin the ETA's clock."""
        if phase == self.phase:
            return
        self.phase = phase
        per_layer = phase in LAYER_PHASES
        if per_layer and self.eta.started is None:
            self.eta.start()
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=f"profiling: {phase}")
        elif not self.quiet and self.done == 0:  # then one line per layer
            scope = f"layer 1 of {self.total}" if per_layer else f"all {self.total} layers"
            print(f"profiling: {phase} ({scope})", file=self.stream, flush=True)

    def __call__(self, name: str, done: int, total: int) -> None:
        self.done, self.total = done, total
        eta = self.eta.left(done, total)
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, total=total, completed=done, eta=eta)
        elif not self.quiet:
            print(f"profiling {done}/{total} layers: {name} ({eta})", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
