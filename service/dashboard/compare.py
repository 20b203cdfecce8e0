"""The compare page's difference table: each job's value next to the first job's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.dashboard.data import JobSummary, LayerPoint
from service.dashboard.figures import metric_value

# a cell is highlighted when it moved by more than this fraction of the first job's value
CHANGE_THRESHOLD = 0.05
# longer tables keep the layers that moved most (in depth order)
MAX_DIFF_ROWS = 60


@dataclass
class DiffCell:
    value: float | None
    delta: float | None  # value − the first job's value
    changed: bool
    strength: float  # |delta| / the largest |delta| of the table, 0..1 (the cell's tint)


@dataclass
class DiffRow:
    name: str
    cells: list[DiffCell]

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.cells)


def diff_table(
    jobs: Sequence[JobSummary],
    names: list[str],
    cells: dict[tuple[str, str], LayerPoint],
    metric: str,
) -> list[DiffRow]:
    rows: list[DiffRow] = []
    for name in names:
        values = []
        for job in jobs:
            point = cells.get((name, job.id))
            values.append(metric_value(point, metric) if point is not None else None)
        ref = values[0]
        row_cells = []
        for value in values:
            delta = value - ref if value is not None and ref is not None else None
            changed = delta is not None and abs(delta) > CHANGE_THRESHOLD * max(
                abs(ref or 0), 1e-12
            )
            row_cells.append(DiffCell(value, delta, changed, 0.0))
        rows.append(DiffRow(name, row_cells))
    largest = max((abs(c.delta) for r in rows for c in r.cells if c.delta is not None), default=0.0)
    if largest > 0:
        for r in rows:
            for c in r.cells:
                c.strength = abs(c.delta) / largest if c.delta is not None else 0.0
    return rows


def most_changed(rows: list[DiffRow], limit: int = MAX_DIFF_ROWS) -> list[DiffRow]:
    """The ``limit`` rows with the largest change, kept in depth order."""
    if len(rows) <= limit:
        return rows
    ranked = sorted(range(len(rows)), key=lambda i: -max(c.strength for c in rows[i].cells))
    return [rows[i] for i in sorted(ranked[:limit])]
