"""Character-level GPT: ``tok_emb`` + ``pos_emb``, causal ``blocks.N``, ``norm``, ``lm_head``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.errors import IntakeError
from workers.zoo.attention import Block

DEFAULTS: dict[str, Any] = {
    "vocab_size": 96,
    "block_size": 64,
    "dim": 64,
    "depth": 2,
    "heads": 4,
    "mlp_dim": 256,
    "fused_qkv": False,
    "tie_weights": False,
}
CHOICES: dict[str, tuple[str, ...]] = {}


class GPT(nn.Module):
    """LongTensor (B, T) -> logits (B, T, vocab_size); ``tie_weights`` shares ``tok_emb``."""

    default_loss = "lm"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim = cfg["dim"]
        self.block_size = cfg["block_size"]
        self.tok_emb = nn.Embedding(cfg["vocab_size"], dim)
        self.pos_emb = nn.Embedding(cfg["block_size"], dim)
        self.blocks = nn.ModuleList(
            Block(dim, cfg["heads"], cfg["mlp_dim"], causal=True, fused_qkv=cfg["fused_qkv"])
            for _ in range(cfg["depth"])
        )
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, cfg["vocab_size"], bias=False)
        for emb in (self.tok_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.02)
        if cfg["tie_weights"]:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


def build(cfg: dict[str, Any]) -> nn.Module:
    if cfg["dim"] % cfg["heads"]:
        raise IntakeError(f"gpt: dim {cfg['dim']} is not divisible by heads {cfg['heads']}")
    return GPT(cfg)
