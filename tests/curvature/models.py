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


class PiecewiseLinearCNN(nn.Module):
    """conv-BN-ReLU-maxpool, a residual conv-LeakyReLU, avgpool, dropout, fc: piecewise linear
    in every weight in eval mode (so every block equals its GGN)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 2 * 2, classes)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
        x = x + nn.functional.leaky_relu(self.conv2(x), 0.1)
        x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.fc(self.drop(x.flatten(1)))


class MLPWith(nn.Module):
    """Linear-ReLU-``between``-Linear-ReLU-Linear: ``between`` is any module (LayerNorm,
    Sigmoid, Softmax, ...) above the first two layers."""

    def __init__(self, between: nn.Module, d: int = 6) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(5, d), nn.Linear(d, d), nn.Linear(d, 3)
        self.between = between

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.between(torch.relu(self.fc1(x)))
        return self.head(torch.relu(self.fc2(x)))


# A tiny tanh classifier and its data, for the tests of whole-profile entry points.
N, D, C = 12, 5, 3
FAST = {"top_k": 4, "lanczos_steps": 3, "dtype": torch.float64}


def tanh_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, C)).double()


def classification_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(N, D, generator=gen, dtype=torch.float64), torch.randint(
        0, C, (N,), generator=gen
    )


def tanh_mlp_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 tanh MLP 4-5-3 in eval mode, 10 inputs and class targets (fixed seeds)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = MLP((4, 5, 3), "tanh").double().eval()
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    return model, x, torch.randint(0, 3, (10,), generator=g)
