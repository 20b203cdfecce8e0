"""Pictures of profiles (matplotlib, Agg): per layer, and the s vs αγ identity over layers."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from api_schemas import LayerProfile

# one colour for Lanczos values that did not converge, in every plot (and the dashboard)
NOT_CONVERGED_COLOR = "tab:gray"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _val(value: float | None) -> float:
    return float("nan") if value is None else value


def layer_figure(layer: LayerProfile) -> bytes:
    """PNG with three log-log panels: h vs σ with the α fit, σ vs k, h vs rank (and λ)."""
    sigma = np.asarray(layer.sigma, dtype=float)
    h = np.asarray(layer.h, dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    valid = (h > 0) & (sigma > 0)
    ax = axes[0]
    ax.loglog(sigma[valid], h[valid], "o", label="h_k (exact)")
    if (~valid).any() and sigma.size:
        ax.plot([], [], " ", label=f"{int((~valid).sum())} with h ≤ 0 not shown")
    if layer.alpha is not None and layer.alpha_intercept is not None and valid.any():
        xs = np.geomspace(sigma[valid].min(), sigma[valid].max(), 50)
        label = f"α = {layer.alpha:.3f}, R² = {_val(layer.r2_alpha):.3f}"
        ax.loglog(xs, np.exp(layer.alpha_intercept) * xs**layer.alpha, "-", label=label)
    if layer.h_kron_ef:
        kron = np.asarray(layer.h_kron_ef)
        ax.loglog(sigma[kron > 0], kron[kron > 0], "x", alpha=0.6, label="h_k Kronecker (EF)")
    ax.set(xlabel="σ_k", ylabel="h_k", title="curvature vs gradient singular value")
    ax.legend(fontsize=8)
    ax = axes[1]
    k = np.arange(1, sigma.size + 1)
    ax.loglog(k, sigma, "o", label="σ_k")
    line = gamma_line(sigma, layer.gamma)
    if line is not None:
        label = f"γ = {layer.gamma:.3f}, R² = {_val(layer.r2_gamma):.3f}"
        ax.loglog(line[0], line[1], "-", label=label)
    ax.set(xlabel="k", ylabel="σ_k", title="gradient singular values vs rank")
    ax.legend(fontsize=8)
    ax = axes[2]
    hs = np.sort(h[h > 0])[::-1]
    ax.loglog(
        np.arange(1, hs.size + 1),
        hs,
        "o-",
        label=f"sorted h (s = {layer.s:.3f})" if _finite(layer.s) else "sorted h",
    )
    eig = np.asarray(layer.eigenvalues, dtype=float)
    converged = np.asarray(
        layer.lanczos.converged if layer.lanczos else [True] * eig.size, dtype=bool
    )
    rank = np.arange(1, eig.size + 1)
    keep = converged & (eig > 0)
    if keep.any():
        label = f"Lanczos λ (s_eig = {layer.s_eig:.3f})" if _finite(layer.s_eig) else "Lanczos λ"
        ax.loglog(rank[keep], eig[keep], "s--", alpha=0.7, label=label)
    loose = ~converged & (eig > 0)
    if loose.any():
        ax.loglog(
            rank[loose], eig[loose], "s", mfc="none", color=NOT_CONVERGED_COLOR,
            label="Lanczos λ, not converged",
        )  # fmt: skip
    ax.set(xlabel="rank j", ylabel="value", title="decay with rank")
    ax.legend(fontsize=8)
    for axis in axes:
        axis.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"{layer.name} ({layer.kind}, {layer.shape[0]}×{layer.shape[1]})")
    fig.tight_layout()
    return _png(fig)


def gamma_line(sigma: np.ndarray, gamma: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The γ fit σ_k ≈ e^a k^−γ over the positive σ_k (the fit set of docs/engine.md, step 7):
    an OLS line passes through the means, so a = mean(log σ_k) + γ·mean(log k)."""
    if gamma is None or not math.isfinite(gamma):
        return None
    k = np.arange(1, sigma.size + 1, dtype=float)
    keep = np.isfinite(sigma) & (sigma > 0)
    if keep.sum() < 2:
        return None
    intercept = np.log(sigma[keep]).mean() + gamma * np.log(k[keep]).mean()
    ks = np.geomspace(k[keep].min(), k[keep].max(), 50)
    return ks, np.exp(intercept) * ks**-gamma


def identity_figure(layers: Sequence[LayerProfile], title: str = "s vs αγ") -> bytes:
    """The paper's headline plot: measured s against predicted αγ per layer, with the identity
    line, the median relative error, the algebraic bound
    (docs/maths.md#the-identity-and-its-algebraic-bound) and s_eig beside it."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    ok = [lay for lay in layers if _finite(lay.s) and _finite(lay.predicted_s)]
    ax = axes[0]
    kinds = sorted({lay.kind for lay in ok})
    for kind in kinds:
        pts = [lay for lay in ok if lay.kind == kind]
        ax.plot([p.predicted_s for p in pts], [p.s for p in pts], "o", label=kind)
    eig = [lay for lay in ok if _finite(lay.s_eig)]
    if eig:
        ax.plot(
            [p.predicted_s for p in eig],
            [p.s_eig for p in eig],
            "k+",
            alpha=0.6,
            label="s_eig (Lanczos)",
        )
    if ok:
        top = 1.1 * max(max(_val(p.s), _val(p.predicted_s)) for p in ok)
        ax.plot([0, top], [0, top], "k-", lw=0.8, label="s = αγ")
        errors = [p.triangle_relative_error for p in ok if p.triangle_relative_error is not None]
        if errors:
            ax.set_title(
                f"median |s − αγ|/s = {100 * float(np.median(errors)):.2f}% ({len(ok)} layers)"
            )
    ax.set(xlabel="predicted s = αγ", ylabel="measured s")
    ax.legend(fontsize=8)
    ax = axes[1]
    both = [
        lay
        for lay in ok
        if _finite(lay.triangle_bound) and _finite(lay.triangle_relative_error_unsorted)
    ]
    if both:
        ax.plot(
            [p.triangle_bound for p in both],
            [p.triangle_relative_error_unsorted for p in both],
            "o",
        )
        top = 1.1 * max(max(_val(p.triangle_bound) for p in both), 1e-3)
        ax.plot([0, top], [0, top], "k-", lw=0.8, label="error = bound")
        ax.legend(fontsize=8)
    ax.set(
        xlabel="algebraic bound √[(1−R²α)(1−R²γ)/R²s]",
        ylabel="|s_unsorted − αγ|/s_unsorted",
        title="identity error vs its bound (docs/engine.md, fits)",
    )
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "layer"


def write_plots(layers: Sequence[LayerProfile], directory: Path) -> list[Path]:
    """One PNG per layer plus ``identity.png``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for layer in layers:
        path = directory / f"{safe_filename(layer.name)}.png"
        path.write_bytes(layer_figure(layer))
        written.append(path)
    path = directory / "identity.png"
    path.write_bytes(identity_figure(layers))
    written.append(path)
    return written
