"""A user's loss callable ``loss(outputs, targets)``, checked once before any measurement.

The engine accumulates micro-batches of b examples as (b/B) · loss(outputs_b, targets_b),
which is the full batch's loss exactly when the callable is a mean over examples of
per-example terms (``reduction="mean"``), and its Hessian-vector products need a loss that
autograd can differentiate twice. Both are checked on the model's real outputs:
- a scalar that depends on the outputs;
- mean reduction: the batch repeated twice gives the same value (a sum would double);
- double differentiability: the gradient in the outputs itself has a gradient
  (``create_graph=True`` twice), so H[X] exists; a loss linear in the outputs (zero
  curvature) is refused too, since every h_k would be 0.
"""

from __future__ import annotations

import torch

from workers.curvature.measurement import OutputLoss


def check_loss_callable(loss: OutputLoss, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """ValueError naming the first property above that ``loss`` lacks."""
    z = outputs.detach().to(torch.float64).requires_grad_(True)
    y = targets.to(torch.float64) if targets.is_floating_point() else targets
    try:
        value = loss(z, y)
    except Exception as exc:
        raise ValueError(f"loss(outputs, targets) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError("loss(outputs, targets) must return a scalar tensor")
    if not value.requires_grad:
        raise ValueError("loss(outputs, targets) does not depend on the outputs")
    twice = loss(torch.cat([z, z]), torch.cat([y, y]))
    a, b = float(value.detach()), float(twice.detach())
    if abs(a - b) > 1e-9 * max(1.0, abs(a)):
        raise ValueError(
            "loss must be a mean over examples (reduction='mean'): the batch repeated twice "
            f"gave {b:.6g} instead of {a:.6g}"
        )
    (grad,) = torch.autograd.grad(value.reshape(()), z, create_graph=True)
    if not grad.requires_grad:
        raise ValueError(
            "loss is linear in the outputs or not twice differentiable: its curvature is zero"
        )
    try:
        torch.autograd.grad((grad * torch.randn_like(grad)).sum(), z)
    except RuntimeError as exc:
        raise ValueError(f"loss is not twice differentiable: {exc}") from None
