"""Tiny models with known structure for float64 checks against dense Hessians."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...], act: str = "tanh") -> None:
        super().__init__()
        acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(acts[act]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 2 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.fc(x.flatten(1))


class Attention(nn.Module):
    """Explicit matmul + softmax attention (CPU SDPA has no double backward)."""

    def __init__(self, d: int, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.qkv = nn.Linear(d, 3 * d)
        else:
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d) for _ in range(3))
        self.out_proj = nn.Linear(d, d)
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            q, k, v = self.qkv(x).split(self.d, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d), dim=-1)
        return self.out_proj(att @ v)


class TinyTransformer(nn.Module):
    def __init__(self, d: int = 4, classes: int = 3, fused: bool = False) -> None:
        super().__init__()
        self.attn = Attention(d, fused)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(d, 2 * d)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(2 * d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean(dim=1))
