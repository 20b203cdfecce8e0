"""h_k, σ_k and Lanczos eigenvalues against a dense float64 Hessian of the layer block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.curvature.dense import CASES, dense_reference
from tests.curvature.models import MLP, SmallCNN
from workers.curvature import layer_inventory, profile_model


@pytest.mark.parametrize("case", sorted(CASES))
def test_h_and_sigma_match_dense_hessian(case: str) -> None:
    make_model, make_x, classes = CASES[case]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = make_model()
    x = make_x(g)
    y = torch.randint(0, classes, (x.shape[0],), generator=g)
    profile = profile_model(model, x, y, top_k=6, lanczos_steps=0, dtype=torch.float64)
    specs, _ = layer_inventory(model)
    assert [s.name for s in specs] == [layer.name for layer in profile.layers]
    for spec, layer in zip(specs, profile.layers, strict=True):
        G, H = dense_reference(model, x, y, "cross_entropy", spec)
        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
        k = layer.k
        assert k > 0
        np.testing.assert_allclose(layer.sigma, S[:k].numpy(), rtol=1e-10)
        h_ref = [
            float(
                torch.outer(U[:, i], Vh[i]).reshape(-1)
                @ H
                @ torch.outer(U[:, i], Vh[i]).reshape(-1)
            )
            for i in range(k)
        ]
        np.testing.assert_allclose(
            layer.h, h_ref, rtol=1e-8, atol=1e-12 * max(abs(v) for v in h_ref)
        )
        directions = torch.stack([torch.outer(U[:, i], Vh[i]).reshape(-1) for i in range(k)])
        m_ref = (directions @ H @ directions.T).numpy()  # M_jk = <V_j, H V_k>
        np.testing.assert_allclose(
            layer.compressed, m_ref, rtol=1e-8, atol=1e-10 * np.abs(m_ref).max()
        )


@pytest.mark.parametrize("case", ["mlp_tanh", "mlp_relu", "cnn", "cnn_relu", "attention_fused"])
def test_lanczos_matches_dense_eigenvalues(case: str) -> None:
    """Double-backward products, except on the GGN-exact convolutions (route ``ggn_jvp``,
    ``cnn_relu``'s largest matrix): products from the held layer-output Jacobian
    (``ggn_jacobian.py``)."""
    make_model, make_x, classes = CASES[case]
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = make_model()
    x = make_x(g)
    y = torch.randint(0, classes, (x.shape[0],), generator=g)
    specs, _ = layer_inventory(model)
    spec = max(specs, key=lambda s: s.shape[0] * s.shape[1])
    dim = spec.shape[0] * spec.shape[1]
    profile = profile_model(
        model, x, y, top_k=5, lanczos_steps=dim, layers=spec.name, dtype=torch.float64
    )
    (layer,) = profile.layers
    _, H = dense_reference(model, x, y, "cross_entropy", spec)
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()
    assert (layer.route == "ggn_jvp") == (case in ("mlp_relu", "cnn_relu"))  # SmallCNN: tanh
    assert layer.lanczos is not None and layer.lanczos.n_converged >= 3
    top = [v for v, c in zip(layer.eigenvalues, layer.lanczos.converged, strict=True) if c][:3]
    np.testing.assert_allclose(top, exact[:3], rtol=1e-7)


def test_float32_run_tracks_float64() -> None:
    torch.manual_seed(2)
    model = MLP((6, 8, 4), "tanh")
    x = torch.randn(64, 6)
    y = torch.randint(0, 4, (64,))
    p64 = profile_model(model, x, y, top_k=3, lanczos_steps=0, dtype=torch.float64)
    p32 = profile_model(model, x, y, top_k=3, lanczos_steps=0, dtype=torch.float32)
    for a, b in zip(p64.layers, p32.layers, strict=True):
        np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-4)
        np.testing.assert_allclose(b.h, a.h, rtol=1e-3, atol=1e-6)
    assert p32.settings.dtype == "float32"


def test_micro_batches_are_exact() -> None:
    torch.manual_seed(3)
    model = SmallCNN(4)
    x = torch.randn(30, 1, 6, 6)
    y = torch.randint(0, 4, (30,))
    whole = profile_model(model, x, y, top_k=4, lanczos_steps=8)
    parts = profile_model(model, x, y, top_k=4, lanczos_steps=8, micro_batch_size=7)
    for a, b in zip(whole.layers, parts.layers, strict=True):
        np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-12)
        np.testing.assert_allclose(b.h, a.h, rtol=1e-10)
        np.testing.assert_allclose(b.h_ef, a.h_ef, rtol=1e-10)
        np.testing.assert_allclose(b.h_kron_ef, a.h_kron_ef, rtol=1e-10)
        np.testing.assert_allclose(b.eigenvalues, a.eigenvalues, rtol=1e-8, atol=1e-14)


def test_model_left_untouched() -> None:
    model = MLP((4, 5, 3), "relu").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile_model(model, torch.randn(10, 4), torch.randint(0, 3, (10,)), top_k=2, lanczos_steps=2)
    assert model.training
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("width", [1, 2])
def test_layers_too_narrow_to_fit_still_round_trip_through_json(width: int) -> None:
    """k < 3 leaves every fit undefined; the profile must still be valid JSON (no NaN in
    fields that cannot be null) so the service can store and serve it."""
    from api_schemas import Profile

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, width), torch.nn.Tanh(), torch.nn.Linear(width, 3)
    ).double()
    x, y = torch.randn(64, 8, dtype=torch.float64), torch.randint(0, 3, (64,))
    profile = profile_model(model, x, y, top_k=20, lanczos_steps=5)
    assert [layer.k for layer in profile.layers] == [width, width]
    assert all(layer.alpha is None or np.isnan(layer.alpha) for layer in profile.layers)
    again = Profile.model_validate_json(profile.model_dump_json())
    assert [layer.sigma for layer in again.layers] == [layer.sigma for layer in profile.layers]
