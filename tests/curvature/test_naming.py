"""Kinds from module names and types: the inventory of a model without an example forward."""

from __future__ import annotations

from torch import nn

from workers.curvature.naming import names_inventory


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.ModuleDict(
            {n: nn.Linear(4, 4) for n in ("q_proj", "k_proj", "v_proj", "out_proj")}
        )
        self.mlp = nn.ModuleDict({"fc1": nn.Linear(4, 8), "fc2": nn.Linear(8, 4)})
        self.emb = nn.Embedding(5, 4)
        self.conv = nn.Conv2d(1, 2, 3)
        self.grouped = nn.Conv2d(2, 2, 3, groups=2)
        self.qkv = nn.Linear(4, 12)
        self.proj = nn.Linear(4, 4)
        self.lm_head = nn.Linear(4, 5)


def test_kinds_by_name_explicit_kinds_and_what_is_skipped() -> None:
    specs, skipped = names_inventory(_Block(), {"proj.weight": "mlp_up"})
    kinds = {s.name: s.kind for s in specs}
    expected = [
        ("attn.q_proj", "attn_q"), ("attn.k_proj", "attn_k"), ("attn.v_proj", "attn_v"),
        ("attn.out_proj", "attn_o"), ("mlp.fc1", "mlp_up"), ("mlp.fc2", "mlp_down"),
        ("conv", "conv"), ("qkv:q", "attn_q"), ("qkv:k", "attn_k"), ("qkv:v", "attn_v"),
        ("qkv", "attn_qkv"), ("proj", "mlp_up"), ("lm_head", "head"),
    ]  # fmt: skip
    assert sorted(kinds.items()) == sorted(expected)  # proj: the explicit kind wins
    assert "grouped" in skipped and "groups=2" in skipped["grouped"]
    head = next(s for s in specs if s.name == "lm_head")
    assert head.softmax_rank_bound and head.shape == (5, 4)
    conv = next(s for s in specs if s.name == "conv")
    assert conv.shape == (2, 9) and conv.param_shape == (2, 1, 3, 3)
