"""Default curvature exponent α by layer kind, for layers without a measured profile.

Values are the paper's per-kind means (docs/optimizer.md): conv ≈ 2.0, attention QKV 1.43,
attention proj 1.17, MLP up 0.84, MLP down 1.15.
Separate q/k/v projections take the fused QKV value; a plain hidden ``linear`` layer takes
2.0, the value the paper used for SN on vision (its only tested setting). Heads are not
SN layers (AdamW), so they have no default here.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ALPHA", "FALLBACK_ALPHA", "SN_KINDS", "default_alpha"]

DEFAULT_ALPHA: dict[str, float] = {
    "conv": 2.0,
    "attn_q": 1.43,
    "attn_k": 1.43,
    "attn_v": 1.43,
    "attn_qkv": 1.43,
    "attn_o": 1.17,
    "mlp_up": 0.84,
    "mlp_down": 1.15,
    "linear": 2.0,
}
FALLBACK_ALPHA = 2.0
"""α for a matrix whose kind is unknown (the paper's SN setting)."""

SN_KINDS = frozenset(DEFAULT_ALPHA)
"""Layer kinds that SN updates; everything else (heads, embeddings, gains, biases) is AdamW."""


def default_alpha(kind: str) -> float:
    """α for ``kind`` from :data:`DEFAULT_ALPHA` (docs/optimizer.md), else the fallback."""
    return DEFAULT_ALPHA.get(kind, FALLBACK_ALPHA)
