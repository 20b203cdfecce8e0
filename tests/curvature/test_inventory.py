"""Layer inventory: kinds, fused QKV blocks, conv reshaping, what is skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.up = nn.ConvTranspose1d(3, 2, 2, stride=2)
        self.fc = nn.Linear(2 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.up(torch.tanh(self.conv(x)))).flatten(1))


class ConvTranspose2dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 2, 2, stride=2)
        self.same = nn.Conv2d(2, 2, 3, padding="same")
        self.even = nn.Conv2d(2, 1, 2, padding="same")  # odd total padding: no unfold geometry
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.same(torch.tanh(self.up(x))))
        return self.fc(torch.tanh(self.even(h)).flatten(1))


class BilinearNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bil = nn.Bilinear(2, 3, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.bil(x[:, :2], x[:, 2:])))


class FunctionalUnembedding(nn.Module):
    """A token model whose logits are ``F.linear(h, wte.weight)``: no head module at all."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(5, 3)
        self.mix = nn.Linear(3, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.tanh(self.mix(self.wte(idx))), self.wte.weight)


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 3)
        self.spare = nn.Linear(4, 4)  # registered, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def _data(name: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    if name == "unembedding":
        return (
            torch.randint(0, 5, (6, 4), generator=g),
            torch.randint(0, 5, (6, 4), generator=g),
            "lm",
        )
    shape = {"conv1d": (10, 2, 6), "convt2d": (10, 2, 2, 2), "bilinear": (10, 5)}[name]
    return torch.randn(shape, generator=g), torch.randint(0, 3, (10,), generator=g), "cross_entropy"


MODELS = {
    "conv1d": (Conv1dNet, {"conv": "conv", "up": "conv", "fc": "head"}),
    "convt2d": (
        ConvTranspose2dNet,
        {"up": "conv", "same": "conv", "even": "conv", "fc": "head"},
    ),
    "bilinear": (BilinearNet, {"bil": "linear", "fc": "head"}),
    "unembedding": (FunctionalUnembedding, {"mix": "linear", "wte": "head"}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matrices_the_name_inventory_missed_match_the_dense_hessian(name: str) -> None:
    from tests.curvature.dense import dense_reference
    from workers.curvature import profile_model
    from workers.curvature.graph import example_forward

    make, kinds = MODELS[name]
    torch.manual_seed(0)
    model = make().double()
    x, y, loss = _data(name, torch.Generator().manual_seed(1))
    profile = profile_model(model, x, y, loss=loss, top_k=4, lanczos_steps=0)
    assert {layer.name: layer.kind for layer in profile.layers} == kinds
    specs, _ = layer_inventory(model, example_forward(x))
    for spec, layer in zip(specs, profile.layers, strict=True):
        G, H = dense_reference(model, x, y, loss, spec)
        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
        np.testing.assert_allclose(layer.sigma, S[: layer.k].numpy(), rtol=1e-10)
        dirs = [torch.outer(U[:, i], Vh[i]).reshape(-1) for i in range(layer.k)]
        h_ref = [float(d @ H @ d) for d in dirs]
        np.testing.assert_allclose(layer.h, h_ref, rtol=1e-8, atol=1e-12 * max(map(abs, h_ref)))


def test_same_padding_keeps_kfac_where_unfold_rebuilds_the_patches() -> None:
    from workers.curvature import profile_model

    torch.manual_seed(0)
    model = ConvTranspose2dNet().double()
    x, y, _ = _data("convt2d", torch.Generator().manual_seed(2))
    by = {
        layer.name: layer for layer in profile_model(model, x, y, top_k=3, lanczos_steps=0).layers
    }
    assert by["same"].h_ef and "kfac_unavailable" not in by["same"].flags
    assert not by["even"].h_ef and "kfac_unavailable" in by["even"].flags
    # h^EF = (1/B) Σ_i ⟨G_i, V_k⟩² from per-example gradients checks the 'same' geometry
    w = model.same.weight
    per_example = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1].double())
        loss = F.cross_entropy(out, y[i : i + 1], reduction="sum")
        per_example.append(torch.autograd.grad(loss, w)[0].reshape(w.shape[0], -1))
    Gi = torch.stack(per_example)
    U, _, Vh = torch.linalg.svd(Gi.mean(0), full_matrices=False)
    k = len(by["same"].h_ef)
    h_ef = [float((torch.einsum("bmn,m,n->b", Gi, U[:, j], Vh[j]) ** 2).mean()) for j in range(k)]
    np.testing.assert_allclose(by["same"].h_ef, h_ef, rtol=1e-9)


def test_a_registered_but_unused_layer_is_skipped_with_lanczos() -> None:
    from workers.curvature import profile_model

    torch.manual_seed(0)
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    profile = profile_model(Unused(), x, y, top_k=2, lanczos_steps=3)
    assert [layer.name for layer in profile.layers] == ["used"]
    assert profile.skipped == {"spare": "not used by the forward (zero gradient)"}


def test_an_exported_program_with_a_static_batch_is_traced() -> None:
    from workers.curvature.graph import example_forward

    model = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 3)).eval()
    x = torch.randn(3, 4)
    program = torch.export.export(model, (x,)).module()  # batch fixed at 3: one example fails
    specs, skipped = layer_inventory(program, example_forward(x))
    assert {s.name: s.kind for s in specs} == {"0": "linear", "2": "head"} and not skipped
    assert all("kfac_unavailable" in s.flags for s in specs)  # no module calls to hook


def test_traced_mha_tied_head_and_grouped_conv() -> None:
    from workers.curvature.graph import example_forward

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.mha = nn.MultiheadAttention(6, 2, batch_first=True)
            self.dw = nn.Conv1d(6, 6, 3, groups=6, padding=1)
            self.lm_head = nn.Linear(6, 10, bias=False)
            self.lm_head.weight = self.emb.weight

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.emb(idx)
            a, _ = self.mha(x, x, x, need_weights=False)
            return self.lm_head(x + self.dw(a.transpose(1, 2)).transpose(1, 2))

    specs, skipped = layer_inventory(Net(), example_forward(torch.randint(0, 10, (2, 5))))
    assert {s.name: s.kind for s in specs} == {
        "mha.in_proj:q": "attn_q",
        "mha.in_proj:k": "attn_k",
        "mha.in_proj:v": "attn_v",
        "mha.in_proj": "attn_qkv",
        "mha.out_proj": "attn_o",
        "lm_head": "head",
    }
    assert skipped == {"dw": "grouped convolution (groups=6) skipped"}
