"""Plotly figure specifications (``{"data": [...], "layout": {...}}``) for the dashboard.

The pages embed these as JSON and ``dashboard.js`` hands them to ``Plotly.newPlot``; all the
choices (which points, which fit line, which colours) are made here, in typed Python.
Values that JSON cannot carry (NaN, ±Inf) become ``null``, which Plotly leaves as gaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from api_schemas import LayerDetail
from api_schemas.profile import LayerKind
from service.dashboard.data import JobSummary, LayerPoint

Figure = dict[str, Any]

KIND_COLOURS = dict(
    zip(
        get_args(LayerKind),
        (
            "#1f77b4",
            "#d62728",
            "#ff7f0e",
            "#2ca02c",
            "#9467bd",
            "#8c564b",
            "#e377c2",
            "#17becf",
            "#7f7f7f",
            "#bcbd22",
        ),
        strict=True,
    )
)

COMPARED_METRICS: dict[str, str] = {
    "alpha": "α",
    "gamma": "γ",
    "s": "s",
    "identity_error": "identity error |s − αγ|/|s|",
}


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _finite_list(values: Iterable[float | None]) -> list[float | None]:
    return [finite(v) for v in values]


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 14}},
        "xaxis": {"title": {"text": x}, "automargin": True},
        "yaxis": {"title": {"text": y}, "automargin": True},
        "margin": {"l": 60, "r": 30, "t": 40, "b": 90},
        "height": 360,
        "legend": {"orientation": "h", "y": -0.32},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def _by_kind(points: Sequence[LayerPoint]) -> dict[str, list[LayerPoint]]:
    groups: dict[str, list[LayerPoint]] = {}
    for p in points:
        groups.setdefault(p.kind, []).append(p)
    return groups


def _kind_markers(
    kind: str, group: Sequence[LayerPoint], *, x: list[Any], y: list[Any], hovertemplate: str
) -> dict[str, Any]:
    """One layer kind's points as a marker trace; a click opens the layer (its id)."""
    return {
        "type": "scatter",
        "mode": "markers",
        "name": kind,
        "x": x,
        "y": y,
        "text": [p.name for p in group],
        "customdata": [p.id for p in group],
        "marker": {"color": KIND_COLOURS.get(kind, "#333"), "size": 8},
        "hovertemplate": hovertemplate,
    }


def depth_figure(points: Sequence[LayerPoint]) -> Figure:
    """α of every stored layer against its depth, one trace per layer kind."""
    data = [
        _kind_markers(
            kind,
            group,
            x=[p.depth for p in group],
            y=_finite_list(p.alpha for p in group),
            hovertemplate="%{text}<br>depth %{x}<br>α = %{y:.4g}<extra></extra>",
        )
        for kind, group in _by_kind(points).items()
    ]
    return {"data": data, "layout": _layout("α by depth", "depth (layer position)", "α")}


def identity_figure(points: Sequence[LayerPoint]) -> Figure:
    """s against αγ per layer kind, with the line s = αγ."""
    data: list[dict[str, Any]] = [
        _kind_markers(
            kind,
            group,
            x=_finite_list(p.predicted_s for p in group),
            y=_finite_list(p.s for p in group),
            hovertemplate="%{text}<br>αγ = %{x:.4g}<br>s = %{y:.4g}<extra></extra>",
        )
        for kind, group in _by_kind(points).items()
    ]
    both = [
        v
        for p in points
        for v in (finite(p.s), finite(p.predicted_s))
        if v is not None  # the diagonal spans every drawn point
    ]
    lo, hi = (min(both), max(both)) if both else (0.0, 1.0)
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "s = αγ",
            "x": [lo, hi],
            "y": [lo, hi],
            "line": {"color": "#555", "dash": "dash"},
            "hoverinfo": "skip",
        }
    )
    return {"data": data, "layout": _layout("identity: s vs αγ", "αγ", "s")}


def h_sigma_figure(layer: LayerDetail) -> Figure:
    """h_k against σ_k on log-log axes (positive h only), with h = e^a σ^α over the fit."""
    pairs = [(s, h) for s, h in zip(layer.sigma, layer.h, strict=False) if s > 0 and h > 0]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "h_k",
            "x": [s for s, _ in pairs],
            "y": [h for _, h in pairs],
            "marker": {"color": KIND_COLOURS.get(layer.kind, "#333"), "size": 8},
        }
    ]
    if layer.alpha is not None and layer.alpha_intercept is not None and pairs:
        lo, hi = min(s for s, _ in pairs), max(s for s, _ in pairs)
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"fit α = {layer.alpha:.3f}",
                "x": [lo, hi],
                "y": [math.exp(layer.alpha_intercept) * x**layer.alpha for x in (lo, hi)],
                "line": {"color": "#000", "dash": "dash"},
            }
        )
    return {
        "data": data,
        "layout": _layout("h vs σ", "σ_k", "h_k", xaxis={"type": "log"}, yaxis={"type": "log"}),
    }


def sigma_k_figure(layer: LayerDetail) -> Figure:
    gamma = f" (γ = {layer.gamma:.3f})" if layer.gamma is not None else ""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "σ_k",
                "x": list(range(1, len(layer.sigma) + 1)),
                "y": _finite_list(layer.sigma),
            }
        ],
        "layout": _layout(
            "σ vs k" + gamma, "k", "σ_k", xaxis={"type": "log"}, yaxis={"type": "log"}
        ),
    }


def rank_figure(layer: LayerDetail) -> Figure:
    """Rank-sorted h_(j) and the Lanczos eigenvalues λ_j (positive values, log scale)."""
    h_sorted = sorted((h for h in layer.h if h > 0), reverse=True)
    eigs = [e for e in layer.eigenvalues if e > 0]
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "h_(j)",
            "x": list(range(1, len(h_sorted) + 1)),
            "y": h_sorted,
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Lanczos λ_j",
            "x": list(range(1, len(eigs) + 1)),
            "y": eigs,
        },
    ]
    return {
        "data": data,
        "layout": _layout(
            "h and Lanczos λ vs rank",
            "rank j",
            "value",
            xaxis={"type": "log"},
            yaxis={"type": "log"},
        ),
    }


def compressed_figure(layer: LayerDetail) -> Figure | None:
    """M_jk = ⟨V_j, H[V_k]⟩ as a heat map (None on the output route, where M is not computed)."""
    if not layer.compressed:
        return None
    k = len(layer.compressed)
    return {
        "data": [
            {
                "type": "heatmap",
                "name": "M",
                "z": [_finite_list(row) for row in layer.compressed],
                "x": list(range(1, k + 1)),
                "y": list(range(1, k + 1)),
                "colorscale": "RdBu",
                "zmid": 0,
                "hovertemplate": "j=%{y} k=%{x}<br>M = %{z:.4g}<extra></extra>",
            }
        ],
        "layout": _layout(
            f"compressed matrix M ({k}×{k})",
            "k",
            "j",
            yaxis={"autorange": "reversed"},
            height=380,
        ),
    }


def kfac_figure(layer: LayerDetail) -> Figure | None:
    """Φ_k^Kron (left axis) and χ_k = h_k / h_k^Kron (right axis) against k."""
    if not layer.phi and not layer.chi:
        return None
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Φ_k (K-FAC)",
            "x": list(range(1, len(layer.phi) + 1)),
            "y": _finite_list(layer.phi),
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "χ_k = h_k / h_k^Kron",
            "x": list(range(1, len(layer.chi) + 1)),
            "y": _finite_list(layer.chi),
            "yaxis": "y2",
        },
    ]
    return {
        "data": data,
        "layout": _layout(
            "K-FAC alignment",
            "k",
            "Φ_k",
            yaxis={"type": "log"},
            yaxis2={"title": {"text": "χ_k"}, "overlaying": "y", "side": "right"},
            margin={"r": 70},
        ),
    }


def layer_figures(layer: LayerDetail) -> dict[str, Figure]:
    figures = {
        "h-sigma": h_sigma_figure(layer),
        "sigma-k": sigma_k_figure(layer),
        "rank": rank_figure(layer),
        "compressed": compressed_figure(layer),
        "kfac": kfac_figure(layer),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


def metric_value(point: LayerPoint, metric: str) -> float | None:
    return finite(getattr(point, metric))


def compare_grid(
    jobs: Sequence[JobSummary], points: dict[str, list[LayerPoint]]
) -> tuple[list[str], dict[tuple[str, str], LayerPoint]]:
    """Layer names in depth order (first job first, then names only later jobs have) and
    each (layer name, job id) cell."""
    names: dict[str, None] = {}
    cells: dict[tuple[str, str], LayerPoint] = {}
    for job in jobs:
        for p in points.get(job.id, []):
            names.setdefault(p.name, None)
            cells[(p.name, job.id)] = p
    return list(names), cells


def compare_figures(
    jobs: Sequence[JobSummary], names: list[str], cells: dict[tuple[str, str], LayerPoint]
) -> dict[str, tuple[Figure, Figure]]:
    """Per metric: a layer × job heat map and one line per job across the layers."""
    out: dict[str, tuple[Figure, Figure]] = {}
    labels = [job.label for job in jobs]
    for metric, title in COMPARED_METRICS.items():

        def value(name: str, job_id: str, metric: str = metric) -> float | None:
            cell = cells.get((name, job_id))
            return metric_value(cell, metric) if cell is not None else None

        # layers on a numeric depth axis (names in the hover): a categorical axis of
        # thousands of names costs the browser seconds
        depth = list(range(len(names)))
        # few layers: their names as the ticks; many: plain depth numbers
        ticks = {"tickvals": depth, "ticktext": names} if len(names) <= 40 else {}
        heat = {
            "data": [
                {
                    "type": "heatmap",
                    "name": title,
                    "z": [[value(n, job.id) for job in jobs] for n in names],
                    "x": labels,
                    "y": depth,
                    "text": [[n] * len(jobs) for n in names],
                    "colorscale": "Viridis",
                    "hovertemplate": "%{text}<br>%{x}<br>%{z:.4g}<extra></extra>",
                }
            ],
            "layout": _layout(
                f"{title}: layer × job",
                "job",
                "" if ticks else "layer depth",  # the named ticks say it
                yaxis={"autorange": "reversed", **ticks},
                xaxis={"type": "category"},
                height=min(700, max(300, 60 + 14 * len(names))),
                margin={"l": 120 if ticks else 60},
            ),
        }
        lines = {
            "data": [
                {
                    "type": "scatter",
                    "mode": "lines+markers" if len(names) <= 200 else "lines",
                    "name": job.label,
                    "x": depth,
                    "y": [value(n, job.id) for n in names],
                    "text": names,
                    "hovertemplate": "%{text}<br>%{y:.4g}<extra></extra>",
                }
                for job in jobs
            ],
            "layout": _layout(f"{title} per layer", "layer", title, xaxis=ticks),
        }
        out[metric] = (heat, lines)
    return out
