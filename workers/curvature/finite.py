"""NaN/Inf checks before a measurement: a clear error naming the tensor, not a failed SVD."""

from __future__ import annotations

import torch
from torch import nn

from workers.intake.errors import NonFiniteError


def check_finite(model: nn.Module, tensors: dict[str, torch.Tensor | None]) -> None:
    """Raise :class:`NonFiniteError` for the first of ``tensors`` (name -> tensor), parameter
    or floating buffer of ``model`` that holds a NaN or an Inf."""
    named: list[tuple[str, torch.Tensor | None]] = list(tensors.items())
    named += [(f"parameter {n}", p) for n, p in model.named_parameters()]
    named += [(f"buffer {n}", b) for n, b in model.named_buffers()]
    for name, tensor in named:
        if tensor is None or not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor.detach())
        if bool(bad.any()):
            count = int(bad.sum())
            kinds = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
            raise NonFiniteError(
                f"{name} holds {count} non-finite value{'s' if count > 1 else ''} ({kinds}); "
                "curvature is undefined there"
            )
