"""Readable tables of profiles: what a profile run prints when it is done."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from api_schemas import LayerProfile

# (header, minimum width); the layer column grows to the longest name: names are never cut.
# err% compares the paper's s (rank-sorted h) with alpha*gamma; err_u% is the same identity on
# unsorted h, the error that bnd_u% (the algebraic bound, docs/engine.md) bounds.
COLUMNS: Sequence[tuple[str, int]] = (
    ("layer", 5),
    ("kind", 8),
    ("shape", 11),
    ("K", 3),
    ("alpha", 6),
    ("R2a", 5),
    ("gamma", 6),
    ("s", 6),
    ("a*g", 6),
    ("err%", 6),
    ("err_u%", 6),
    ("bnd_u%", 6),
    ("s_eig", 6),
    ("PR_h", 5),
    ("flags", 0),
)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def layer_row(layer: LayerProfile) -> list[str]:
    m, n = layer.shape
    return [
        layer.name,
        layer.kind,
        f"{m}x{n}",
        str(layer.k),
        _num(layer.alpha, 2),
        _num(layer.r2_alpha, 2),
        _num(layer.gamma, 2),
        _num(layer.s, 2),
        _num(layer.predicted_s, 2),
        _pct(layer.triangle_relative_error),
        _pct(layer.triangle_relative_error_unsorted),
        _pct(layer.triangle_bound),
        _num(layer.s_eig, 2),
        _num(layer.pr_h, 2),
        ",".join(layer.flags),
    ]


def format_table(layers: Iterable[LayerProfile]) -> str:
    """A table: one row per layer with α, γ, s, αγ, the identity errors, the bound and PR.

    Every column is as wide as its widest cell, so no name or number is ever cut."""
    rows = [layer_row(layer) for layer in layers]
    widths = [
        max([len(name), minimum, *(len(row[i]) for row in rows)])
        for i, (name, minimum) in enumerate(COLUMNS)
    ]
    widths[-1] = 0  # the last column (flags) is never padded

    def line(cells: Sequence[str]) -> str:
        return " ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line([name for name, _ in COLUMNS])]
    lines.append(" ".join("-" * (w or 5) for w in widths))
    lines.extend(line(row) for row in rows)
    return "\n".join(lines)
