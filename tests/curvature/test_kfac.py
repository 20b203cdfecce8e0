"""Kronecker factors, alignment and the α decomposition
(docs/maths.md#kronecker-factors-and-alignment): T3 constructed perfect alignment,
T4 constructed misalignment, T11 the empirical-Fisher identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from api_schemas import ProfileSettings
from tests.curvature.models import SmallCNN
from workers.curvature import fit_exponents, layer_inventory, profile_model
from workers.curvature.engine import list_layer_names, profile_layers
from workers.curvature.graph import example_forward
from workers.curvature.kfac import (
    KroneckerQuantities,
    Projections,
    _accumulate,
    alpha_decomposition,
    kronecker_quantities,
)
from workers.curvature.measurement import make_batch, output_tensor


def _orthonormal(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    return q


def _constructed(
    delta: torch.Tensor, acts: torch.Tensor, K: int
) -> tuple[KroneckerQuantities, torch.Tensor, Projections]:
    B = delta.shape[0]
    G = delta.T @ acts / B
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    proj = Projections()
    _accumulate(proj, acts[:, None, :], delta[:, None, :], U[:, :K], Vh[:K].T, True)
    return kronecker_quantities(proj, S[:K], B), S[:K], proj


def test_t3_perfect_alignment_gives_alpha_two() -> None:
    g = torch.Generator().manual_seed(3)
    m, n, r, B = 40, 30, 12, 256
    U, V = _orthonormal(m, r, g), _orthonormal(n, r, g)
    Z = B**0.5 * _orthonormal(B, r, g)
    target = torch.arange(1, r + 1, dtype=torch.float64) ** -0.8
    delta = Z @ torch.diag(target.sqrt()) @ U.T
    acts = Z @ torch.diag(target.sqrt()) @ V.T
    q, sigma, _ = _constructed(delta, acts, r)
    np.testing.assert_allclose(sigma.numpy(), target.numpy(), rtol=1e-12)
    np.testing.assert_allclose(q.cosines.numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(q.phi.numpy(), 1.0, rtol=1e-10)
    fit = fit_exponents(sigma.numpy(), q.h_kron.numpy(), min_points=3)
    assert fit.alpha == pytest.approx(2.0, abs=1e-12)
    assert q.flags == ()


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5, 2.5, 3.0])
def test_t4_misalignment_gives_any_alpha(alpha: float) -> None:
    g = torch.Generator().manual_seed(4)
    m, n, r, B = 40, 30, 12, 256
    U, V = _orthonormal(m, r, g), _orthonormal(n, r, g)
    both = _orthonormal(B, 2 * r, g) * B**0.5
    Z_s, Z_perp = both[:, :r], both[:, r:]
    sigma = torch.arange(1, r + 1, dtype=torch.float64) ** -0.8
    if alpha < 2:
        c = (sigma / sigma[0]) ** ((2 - alpha) / 2)
    else:
        c = (sigma[-1] / sigma) ** ((alpha - 2) / 2)
    a = sigma**2 / c**2
    W = Z_s @ torch.diag(c) + Z_perp @ torch.diag((1 - c**2).sqrt())
    delta = Z_s @ torch.diag(a.sqrt()) @ U.T
    acts = W @ V.T
    q, measured, _ = _constructed(delta, acts, r)
    np.testing.assert_allclose(measured.numpy(), sigma.numpy(), rtol=1e-10)
    np.testing.assert_allclose(q.cosines.numpy(), c.numpy(), rtol=1e-10)
    np.testing.assert_allclose(q.phi_paper.numpy(), 1.0, rtol=1e-8)
    fit = fit_exponents(measured.numpy(), q.h_kron.numpy(), min_points=3)
    assert fit.alpha == pytest.approx(alpha, abs=1e-10)
    dec = alpha_decomposition(
        measured.numpy(),
        q.h_kron.numpy(),
        q.h_kron.numpy(),
        q.cosines.numpy(),
        Lambda=q.Lambda.numpy(),
        phi_paper=q.phi_paper.numpy(),
    )
    assert dec.beta == pytest.approx(alpha, abs=1e-8)  # the paper assigns it all to beta
    assert dec.alpha_kron == pytest.approx(2 - 2 * dec.cosine_slope, abs=1e-12)


def test_t11_empirical_fisher_identity_with_per_example_gradients() -> None:
    torch.manual_seed(11)
    model = SmallCNN(4).double().eval()
    x = torch.randn(32, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (32,))
    profile = profile_model(model, x, y, top_k=6, lanczos_steps=0)
    specs, _ = layer_inventory(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)

    for spec, layer in zip(specs, profile.layers, strict=True):

        def per_example_loss(
            w: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor, spec=spec
        ) -> torch.Tensor:
            out = output_tensor(functional_call(model, {**params, spec.parameter: w}, (xi[None],)))
            return torch.nn.functional.cross_entropy(out, yi[None])

        G_i = vmap(grad(per_example_loss), in_dims=(None, 0, 0))(
            params[spec.parameter], batch.inputs, batch.targets
        )
        G_i = G_i.reshape(G_i.shape[0], spec.shape[0], -1)
        U, S, Vh = torch.linalg.svd(G_i.mean(0), full_matrices=False)
        k = layer.k
        xs = torch.einsum("mk,bmn,kn->bk", U[:, :k], G_i, Vh[:k])
        np.testing.assert_allclose(xs.mean(0).numpy(), S[:k].numpy(), rtol=1e-10)
        h_ef_ref = (S[:k] ** 2 + xs.var(0, unbiased=False)).numpy()
        np.testing.assert_allclose(layer.h_ef, h_ef_ref, rtol=1e-9)
        T = layer.positions
        assert np.all(np.array(layer.h_kron_ef) >= np.array(layer.sigma) ** 2 / T * (1 - 1e-12))
        assert "kron_normalisation_violation" not in layer.flags
        np.testing.assert_allclose(
            np.array(layer.phi), 1 / (T * np.array(layer.cosines) ** 2), rtol=1e-9
        )


def test_slope_decomposition_sums_exactly_on_a_network() -> None:
    torch.manual_seed(7)
    model = SmallCNN(4)
    x = torch.randn(64, 1, 6, 6)
    y = torch.randint(0, 4, (64,))
    # ranks 3, 4 and 3: α (and so its decomposition) needs min_fit_points ≤ 3
    settings = ProfileSettings(
        top_k=8, lanczos_steps=0, variants=["ef", "kron", "mc"], min_fit_points=3
    )
    names = list_layer_names(model, None, example_forward(x))
    layers = profile_layers(model, x, y, names, settings)
    assert [layer.positions for layer in layers] == [36, 4, 1]
    for layer in layers:
        dec = layer.decomposition
        assert layer.alpha is not None and dec is not None
        assert dec.alpha_exact == pytest.approx(2 + dec.phi_kron_slope + dec.chi_slope, abs=1e-12)
        assert dec.alpha_exact == pytest.approx(2 - 2 * dec.cosine_slope + dec.chi_slope, abs=1e-12)
        assert dec.alpha_kron == pytest.approx(dec.beta + dec.phi_paper, abs=1e-10)
        assert len(layer.h_mc) == layer.k and len(layer.h_kron_mc) == layer.k
        assert all(v >= 0 for v in layer.h_mc)
