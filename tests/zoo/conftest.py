"""Tiny configs and inputs shared by the zoo and intake tests."""

from __future__ import annotations

from typing import Any

import torch

TINY: dict[str, dict[str, Any]] = {
    "mlp": {"arch": "mlp", "widths": [8, 6], "activation": "gelu"},
    "mlp_tanh": {"arch": "mlp", "widths": [8], "activation": "tanh"},
    "vgg": {"arch": "vgg", "features": [4, "M", 6, "M"], "hidden": [12]},
    "resnet": {"arch": "resnet", "widths": [4, 6], "blocks": [1, 2]},
    "vit": {"arch": "vit", "dim": 8, "heads": 2, "depth": 1, "mlp_dim": 12},
    "vit_fused_linear": {
        "arch": "vit",
        "dim": 8,
        "heads": 2,
        "depth": 1,
        "mlp_dim": 12,
        "fused_qkv": True,
        "patch_embed": "linear",
        "pool": "mean",
    },
    "gpt": {"arch": "gpt", "dim": 8, "heads": 2, "depth": 1, "mlp_dim": 12, "block_size": 6},
    "gpt_tied_fused": {
        "arch": "gpt",
        "dim": 8,
        "heads": 2,
        "depth": 2,
        "mlp_dim": 12,
        "block_size": 6,
        "tie_weights": True,
        "fused_qkv": True,
    },
}


def example_batch(arch: str, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets that fit the default data shapes of ``arch``."""
    gen = torch.Generator().manual_seed(seed)
    if arch == "gpt":
        x = torch.randint(0, 96, (n, 6), generator=gen)
        return x, torch.randint(0, 96, (n, 6), generator=gen)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)
