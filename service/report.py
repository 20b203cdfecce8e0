"""Readable tables of profiles: what a profile run prints when it is done."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from api_schemas import LayerProfile

COLUMNS: Sequence[tuple[str, int]] = (
    ("layer", 28),
    ("kind", 8),
    ("shape", 11),
    ("K", 3),
    ("alpha", 6),
    ("R2a", 5),
    ("gamma", 6),
    ("s", 6),
    ("a*g", 6),
    ("err%", 6),
    ("bound%", 6),
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
        _pct(layer.triangle_bound),
        _num(layer.s_eig, 2),
        _num(layer.pr_h, 2),
        ",".join(layer.flags),
    ]


def _fit(text: str, width: int) -> str:
    if width and len(text) > width:
        return "…" + text[-(width - 1) :]
    return text.ljust(width) if width else text


def format_table(layers: Iterable[LayerProfile]) -> str:
    """A fixed-width table: one row per layer with α, γ, s, αγ, the identity error and PR."""
    lines = [" ".join(_fit(name, width) for name, width in COLUMNS).rstrip()]
    lines.append(" ".join("-" * (width or 5) for _, width in COLUMNS))
    for layer in layers:
        cells = layer_row(layer)
        lines.append(
            " ".join(_fit(c, w) for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip()
        )
    return "\n".join(lines)
