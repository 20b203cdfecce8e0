"""VGG-style CNN with torchvision naming: ``features.N`` and ``classifier.N`` (last = head)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.errors import IntakeError

DEFAULTS: dict[str, Any] = {
    "in_channels": 1,
    "image_size": 8,
    "classes": 10,
    "features": [32, 32, "M", 64, 64, "M"],
    "hidden": [128, 128],
    "batch_norm": True,
    "dropout": 0.0,
}
CHOICES: dict[str, tuple[str, ...]] = {"features": ("M",)}


class VGG(nn.Module):
    """``features`` (Conv2d[/BatchNorm2d]/ReLU/MaxPool2d) -> flatten -> ``classifier``.

    The classifier repeats Linear, ReLU, Dropout per hidden width, as torchvision does, so its
    Linear layers sit at ``classifier.0``, ``classifier.3``, ...
    """

    default_loss = "cross_entropy"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = cfg["in_channels"], cfg["image_size"]
        for item in cfg["features"]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1))
            if cfg["batch_norm"]:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU())
            channels = item
        if size < 1:
            raise IntakeError(f"vgg: too many 'M' pools for image_size {cfg['image_size']}")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        width = channels * size * size
        for hidden in cfg["hidden"]:
            head += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg["dropout"])]
            width = hidden
        head.append(nn.Linear(width, cfg["classes"]))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build(cfg: dict[str, Any]) -> nn.Module:
    if not 0.0 <= cfg["dropout"] < 1.0:
        raise IntakeError(f"vgg: dropout must be in [0, 1), got {cfg['dropout']}")
    return VGG(cfg)
