"""A user's loss callable (``custom_loss.check_loss_callable``) in ``profile_model``: against
autograd's dense Hessian of exactly that function, and the callables it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.curvature.dense import dense_top_directions
from tests.curvature.models import FAST, classification_data, tanh_classifier
from workers.curvature import profile_model


def _smoothed(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, label_smoothing=0.1)


def test_custom_loss_matches_a_dense_hessian_in_micro_batches() -> None:
    """Label-smoothed cross-entropy: no built-in name, so the reference is autograd's
    Hessian of exactly this function on the whole batch; micro-batches of 5, 5, 2."""
    model, (x, y) = tanh_classifier(), classification_data()
    profile = profile_model(model, x, y, loss=_smoothed, micro_batch_size=5, **FAST)
    assert profile.settings.loss == "custom"
    layer = next(entry for entry in profile.layers if entry.name == "0")
    weight = model[0].weight.detach().clone()

    def loss(w: torch.Tensor) -> torch.Tensor:
        return _smoothed(model[2](torch.tanh(F.linear(x, w, model[0].bias))), y)

    S, h = dense_top_directions(loss, weight, layer.k)
    np.testing.assert_allclose(layer.sigma, S[: layer.k].numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(layer.h, h, rtol=1e-10, atol=1e-14)
    assert "ggn_unavailable" not in layer.flags  # ggn is not among the default variants


def test_callable_equal_to_a_named_loss_gives_the_same_profile() -> None:
    model, (x, y) = tanh_classifier(), classification_data()
    named = profile_model(model, x, y, loss="cross_entropy", **FAST)
    custom = profile_model(model, x, y, loss=lambda o, t: F.cross_entropy(o, t), **FAST)
    for a, b in zip(named.layers, custom.layers, strict=True):
        np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-12)
        np.testing.assert_allclose(a.h, b.h, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (lambda o, t: F.cross_entropy(o, t, reduction="sum"), "mean over examples"),
        (lambda o, t: o.sum() / o.shape[0], "linear in the outputs"),
        (lambda o, t: (o.argmax(-1) == t).double().mean(), "does not depend"),
        (lambda o, t: o, "scalar"),
    ],
)
def test_unfit_loss_callables_are_refused(loss: object, message: str) -> None:
    model, (x, y) = tanh_classifier(), classification_data()
    with pytest.raises(ValueError, match=message):
        profile_model(model, x, y, loss=loss, **FAST)  # type: ignore[arg-type]
