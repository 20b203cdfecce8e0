"""Small Vision Transformer: ``patch_embed.proj``, ``blocks.N.{attn,mlp}``, ``norm``, ``head``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.errors import IntakeError
from workers.zoo.attention import Block

DEFAULTS: dict[str, Any] = {
    "image_size": 8,
    "patch_size": 2,
    "in_channels": 1,
    "classes": 10,
    "dim": 64,
    "depth": 2,
    "heads": 4,
    "mlp_dim": 128,
    "patch_embed": "conv",
    "fused_qkv": False,
    "pool": "cls",
}
CHOICES: dict[str, tuple[str, ...]] = {"patch_embed": ("conv", "linear"), "pool": ("cls", "mean")}


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens, by a strided Conv2d or a Linear on flattened patches."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.patch, self.kind = cfg["patch_size"], cfg["patch_embed"]
        in_dim = cfg["in_channels"] * self.patch * self.patch
        self.proj: nn.Module = (
            nn.Conv2d(cfg["in_channels"], cfg["dim"], self.patch, self.patch)
            if self.kind == "conv"
            else nn.Linear(in_dim, cfg["dim"])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            return self.proj(x).flatten(2).transpose(1, 2)
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return self.proj(x.reshape(b, (h // p) * (w // p), c * p * p))


class ViT(nn.Module):
    default_loss = "cross_entropy"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim, tokens = cfg["dim"], (cfg["image_size"] // cfg["patch_size"]) ** 2
        self.pool = cfg["pool"]
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(dim, cfg["heads"], cfg["mlp_dim"], causal=False, fused_qkv=cfg["fused_qkv"])
            for _ in range(cfg["depth"])
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, cfg["classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.pool == "cls" else x[:, 1:].mean(dim=1))


def build(cfg: dict[str, Any]) -> nn.Module:
    if cfg["dim"] % cfg["heads"]:
        raise IntakeError(f"vit: dim {cfg['dim']} is not divisible by heads {cfg['heads']}")
    if cfg["image_size"] % cfg["patch_size"]:
        raise IntakeError(
            f"vit: image_size {cfg['image_size']} is not divisible by patch_size "
            f"{cfg['patch_size']}"
        )
    return ViT(cfg)
