"""Layer inventory: kinds, fused QKV blocks, conv reshaping, what is skipped."""

from __future__ import annotations

import torch
from torch import nn

from tests.curvature.models import SmallCNN, TinyTransformer
from workers.curvature.inventory import layer_inventory, select_layers


def kinds(model: nn.Module) -> dict[str, str]:
    specs, _ = layer_inventory(model)
    return {s.name: s.kind for s in specs}


def test_transformer_kinds_and_fused_split() -> None:
    assert kinds(TinyTransformer(4, 3)) == {
        "attn.q_proj": "attn_q",
        "attn.k_proj": "attn_k",
        "attn.v_proj": "attn_v",
        "attn.out_proj": "attn_o",
        "mlp.fc1": "mlp_up",
        "mlp.fc2": "mlp_down",
        "head": "head",
    }
    specs, _ = layer_inventory(TinyTransformer(4, 3, fused=True))
    by = {s.name: s for s in specs}
    assert [by[f"attn.qkv:{p}"].rows for p in "qkv"] == [(0, 4), (4, 8), (8, 12)]
    assert by["attn.qkv"].kind == "attn_qkv" and by["attn.qkv"].shape == (12, 4)
    w = torch.randn(12, 4)
    q = by["attn.qkv:k"]
    assert torch.equal(q.matrix(w), w[4:8])
    padded = q.embed(w[4:8])
    assert torch.equal(padded[4:8], w[4:8]) and padded[:4].abs().sum() == 0


def test_conv_reshape_matches_unfold_order() -> None:
    specs, _ = layer_inventory(SmallCNN(4))
    conv2 = specs[1]
    assert conv2.kind == "conv" and conv2.shape == (4, 27) and conv2.param_shape == (4, 3, 3, 3)
    w = torch.randn(4, 3, 3, 3)
    assert torch.equal(conv2.embed(conv2.matrix(w)), w)
    x = torch.randn(2, 3, 5, 5)
    cols = nn.functional.unfold(x, 3)
    ref = nn.functional.conv2d(x, w).flatten(2)
    assert torch.allclose(conv2.matrix(w) @ cols, ref, atol=1e-5)


def test_skips_embeddings_norms_grouped_conv_and_handles_mha() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.norm = nn.LayerNorm(6)
            self.dw = nn.Conv2d(4, 4, 3, groups=4)
            self.mha = nn.MultiheadAttention(6, 2, batch_first=True)
            self.lm_head = nn.Linear(6, 10, bias=False)
            self.lm_head.weight = self.emb.weight

    specs, skipped = layer_inventory(Net())
    by = {s.name: s for s in specs}
    assert "dw" in skipped and "groups=4" in skipped["dw"]
    assert {
        "mha.in_proj:q",
        "mha.in_proj:k",
        "mha.in_proj:v",
        "mha.in_proj",
        "mha.out_proj",
    } <= set(by)
    assert by["mha.out_proj"].kind == "attn_o"
    assert "emb" not in by and "norm" not in by
    assert "tied_embedding" in by["lm_head"].flags  # analysed, but its gradient mixes both uses


def test_hf_conv1d_is_transposed() -> None:
    class Conv1D(nn.Module):  # the Hugging Face GPT-2 layout: weight stored (in, out)
        def __init__(self, nf: int, nx: int) -> None:
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.randn(nx, nf))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.Module()
            self.attn.c_attn = Conv1D(3 * 4, 4)
            self.attn.c_proj = Conv1D(4, 4)
            self.mlp = nn.Module()
            self.mlp.c_fc = Conv1D(16, 4)
            self.mlp.c_proj = Conv1D(4, 16)

    specs, _ = layer_inventory(Block())
    by = {s.name: s for s in specs}
    assert by["attn.c_attn:q"].shape == (4, 4) and by["attn.c_attn:q"].transpose
    assert by["attn.c_proj"].kind == "attn_o" and by["mlp.c_proj"].kind == "mlp_down"
    assert by["mlp.c_fc"].kind == "mlp_up" and by["mlp.c_fc"].shape == (16, 4)
    w = torch.randn(4, 12)
    assert torch.equal(by["attn.c_attn:v"].matrix(w), w.t()[8:12])
    assert torch.equal(by["attn.c_attn:v"].embed(w.t()[8:12])[:, 8:12], w[:, 8:12])


def test_explicit_kinds_and_globs() -> None:
    model = SmallCNN(4)
    model.curvprof_kinds = {"fc.weight": "linear"}  # type: ignore[assignment]
    specs, _ = layer_inventory(model)
    assert specs[-1].kind == "linear"
    assert [s.name for s in select_layers(specs, "conv*")] == ["conv1", "conv2"]
    assert [s.name for s in select_layers(specs, "fc, conv1")] == ["conv1", "fc"]
