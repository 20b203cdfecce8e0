"""BasicBlock ResNet with torchvision's parameter names (``conv1``, ``layer1.0.bn1``, ``fc``).

``stem="small"`` (3x3 conv, stride 1, no max-pool) suits 8x8 digits; ``stem="imagenet"``
(7x7/2 conv + 3x3/2 max-pool) with ``widths=[64, 128, 256, 512]``, ``blocks=[2, 2, 2, 2]``,
``in_channels=3``, ``classes=1000`` takes torchvision's resnet18 state dict as is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.errors import IntakeError

DEFAULTS: dict[str, Any] = {
    "in_channels": 1,
    "classes": 10,
    "widths": [16, 32, 64],
    "blocks": [1, 1, 1],
    "stem": "small",
}
CHOICES: dict[str, tuple[str, ...]] = {"stem": ("small", "imagenet")}


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; ``downsample`` = 1x1 conv + BN when the shape changes."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    default_loss = "cross_entropy"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        widths, blocks = cfg["widths"], cfg["blocks"]
        if cfg["stem"] == "imagenet":
            self.conv1 = nn.Conv2d(cfg["in_channels"], widths[0], 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(cfg["in_channels"], widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        inplanes = widths[0]
        self.stages: list[str] = []
        for i, (planes, count) in enumerate(zip(widths, blocks, strict=True)):
            stage = [BasicBlock(inplanes, planes, 1 if i == 0 else 2)]
            stage += [BasicBlock(planes, planes, 1) for _ in range(count - 1)]
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*stage))
            self.stages.append(name)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, cfg["classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(self.avgpool(x).flatten(1))


def build(cfg: dict[str, Any]) -> nn.Module:
    if len(cfg["widths"]) != len(cfg["blocks"]) or not cfg["widths"]:
        raise IntakeError(
            f"resnet: widths {cfg['widths']} and blocks {cfg['blocks']} must be non-empty "
            "lists of the same length"
        )
    return ResNet(cfg)
