"""Fully connected classifier / regressor: ``layers.N`` (hidden Linear) then ``head``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DEFAULTS: dict[str, Any] = {
    "in_features": 64,
    "widths": [128, 128],
    "classes": 10,
    "activation": "relu",
    "loss": "cross_entropy",
}
CHOICES: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "tanh", "gelu"),
    "loss": ("cross_entropy", "mse"),
}
_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
}


class MLP(nn.Module):
    """Flattens its input, so it takes both (N, 64) and (N, 1, 8, 8) digits."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dims = [cfg["in_features"], *cfg["widths"]]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.head = nn.Linear(dims[-1], cfg["classes"])
        self.activation = cfg["activation"]
        self.default_loss: str = cfg["loss"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        act = _ACT[self.activation]
        for layer in self.layers:
            x = act(layer(x))
        return self.head(x)


def build(cfg: dict[str, Any]) -> nn.Module:
    return MLP(cfg)
