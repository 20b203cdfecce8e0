"""Explicit multi-head attention and a pre-norm transformer block, shared by ``vit`` and ``gpt``.

Attention is written as matmul + softmax on purpose: ``F.scaled_dot_product_attention`` has
no double backward and no forward-mode AD on CPU, and the curvature engine needs both.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with ``q_proj``/``k_proj``/``v_proj`` or one fused ``qkv``."""

    def __init__(self, dim: int, heads: int, *, causal: bool, fused_qkv: bool) -> None:
        super().__init__()
        self.dim, self.heads, self.causal, self.fused = dim, heads, causal, fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q_proj = nn.Linear(dim, dim)
            self.k_proj = nn.Linear(dim, dim)
            self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(d, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        dh = d // self.heads
        q, k, v = (z.reshape(b, t, self.heads, dh).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(dh))
        if self.causal:
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        y = scores.softmax(dim=-1) @ v
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    """``fc1`` (up) -> GELU -> ``fc2`` (down)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, causal: bool, fused_qkv: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal=causal, fused_qkv=fused_qkv)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
