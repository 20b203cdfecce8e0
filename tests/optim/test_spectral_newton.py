"""The SpectralNewton optimizer: groups, α from profiles, AdamW parts, T1, training, state."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from api_schemas.profile import LayerProfile, Profile, ProfileSettings
from workers.data import load_builtin
from workers.optim import SpectralNewton, spectral_newton_direction
from workers.zoo import build_model


class _Block(nn.Module):
    """Fused-QKV attention-style names plus an MLP, a norm and a head (no forward needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(8, 24)
        self.attn.proj = nn.Linear(8, 8)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(8, 32)
        self.mlp.fc2 = nn.Linear(32, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4)


def _layer(name: str, kind: str, parameter: str, alpha: float | None, **kw: object) -> LayerProfile:
    return LayerProfile(
        name=name, kind=kind, parameter=parameter, shape=(1, 1), sigma=[], h=[], alpha=alpha, **kw
    )  # type: ignore[arg-type]


def _profile() -> Profile:
    return Profile(
        settings=ProfileSettings(),
        layers=[
            _layer("attn.qkv:q", "attn_q", "attn.qkv.weight", 0.5, rows=(0, 8)),
            _layer("attn.qkv", "attn_qkv", "attn.qkv.weight", 1.3, alpha_intercept=0.0),
            _layer("mlp.fc1", "mlp_up", "mlp.fc1.weight", None),
            _layer("mlp.fc2", "mlp_down", "mlp.fc2.weight", 1.1, alpha_intercept=math.log(2.0)),
            _layer("head", "head", "head.weight", 1.9),
        ],
    )


def test_for_model_defaults_by_kind_and_adamw_scope() -> None:
    """By-kind α (docs/maths.md#spectral-newton-step); head, norm gains and all biases go to one
    AdamW group."""
    model = _Block()
    opt = SpectralNewton.for_model(model, lr=0.01, adamw_lr=1e-3)
    got = {a.parameter: (a.optimizer, a.alpha) for a in opt.assignments}
    assert got["attn.qkv.weight"] == ("sn", 1.43)
    assert got["attn.proj.weight"] == ("sn", 1.17)
    assert got["mlp.fc1.weight"] == ("sn", 0.84)
    assert got["mlp.fc2.weight"] == ("sn", 1.15)
    adamw = {p for p, (o, _) in got.items() if o == "adamw"}
    assert adamw == {
        "head.weight",
        "head.bias",
        "norm.weight",
        "norm.bias",
        *(f"{m}.bias" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")),
    }
    (adamw_group,) = [g for g in opt.param_groups if not g["sn"]]
    assert adamw_group["lr"] == 1e-3 and len(adamw_group["params"]) == len(adamw)
    sn_groups = [g for g in opt.param_groups if g["sn"]]
    assert len(sn_groups) == 4 and all(g["lr"] == 0.01 for g in sn_groups)
    # the fused QKV parameter is one SN matrix of shape 24×8
    assert [g["params"][0].shape for g in sn_groups if g["name"] == "attn.qkv.weight"] == [
        torch.Size([24, 8])
    ]


def test_from_profile_alpha_per_parameter(tmp_path: Path) -> None:
    """Fused α for fused QKV, profile α where defined, kind default where not; κ in newton."""
    model = _Block()
    path = tmp_path / "profile.json"
    path.write_text(_profile().model_dump_json())
    for source in (_profile(), path, str(path)):
        opt = SpectralNewton.from_profile(model, source, lr=0.01, mode="newton")
        got = {a.parameter: (a.alpha, a.kappa, a.source) for a in opt.assignments}
        assert got["attn.qkv.weight"] == (1.3, 1.0, "profile")
        assert got["attn.proj.weight"] == (1.17, 1.0, "default")
        assert got["mlp.fc1.weight"] == (0.84, 1.0, "default")
        assert got["mlp.fc2.weight"][2] == "profile"
        assert got["mlp.fc2.weight"][:2] == pytest.approx((1.1, 2.0))
        assert got["head.weight"] == (None, None, "none")
    paper = SpectralNewton.from_profile(model, _profile(), alphas={"attn.proj.weight": 0.7})
    got = {a.parameter: (a.alpha, a.kappa, a.source) for a in paper.assignments}
    assert got["mlp.fc2.weight"] == (1.1, 1.0, "profile")  # κ = 1 outside newton mode
    assert got["attn.proj.weight"] == (0.7, 1.0, "override")


def test_adamw_part_matches_torch_adamw() -> None:
    """The AdamW groups step exactly as torch.optim.AdamW."""
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    b = nn.Parameter(a.detach().clone())
    ours = SpectralNewton([{"params": [a], "sn": False}], lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for i in range(4):
        g = torch.randn(5, generator=torch.Generator().manual_seed(i))
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_t1_one_newton_step_reaches_zero_loss() -> None:
    """T1 through from_profile: κ = exp(intercept) = 0.04, d = 0, lr 1, no momentum → loss 0."""
    model = nn.Sequential(nn.Linear(3, 2, bias=False)).double()
    vars(model)["curvprof_kinds"] = {"0.weight": "linear"}
    nn.init.zeros_(model[0].weight)
    prof = Profile(
        settings=ProfileSettings(),
        layers=[_layer("0", "linear", "0.weight", 2.0, alpha_intercept=math.log(0.04))],
    )
    opt = SpectralNewton.from_profile(model, prof, lr=1.0, momentum=0.0, mode="newton", damping=0)
    x = torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([[3.0, 4.0]], dtype=torch.float64)

    def loss_fn() -> torch.Tensor:
        return 0.5 * ((model(x) - y) ** 2).sum()

    loss_fn().backward()
    opt.step()
    assert float(loss_fn().detach()) < 1e-24
    expected = torch.tensor([[3.0, 6.0, 6.0], [4.0, 8.0, 8.0]], dtype=torch.float64) / 9
    torch.testing.assert_close(model[0].weight.detach(), expected, rtol=1e-12, atol=1e-12)


def test_trains_mlp_on_digits() -> None:
    """SN (by-kind α) lowers the digits training loss of the zoo MLP within a few steps."""
    torch.manual_seed(0)
    data = load_builtin("digits", split="train", flatten=True)
    x, y = data.inputs[:256], data.targets[:256]
    model = build_model({"arch": "mlp", "widths": [32, 32]})
    opt = SpectralNewton.for_model(model, lr=1.0)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("mode", ["paper", "newton", "normalized"])
def test_state_dict_round_trip(mode: str) -> None:
    """Save after two steps, load into a fresh optimizer on a copied model: identical steps."""
    torch.manual_seed(1)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    model = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    opt = SpectralNewton.for_model(model, lr=0.05, mode=mode, weight_decay=0.01)

    def step(m: nn.Module, o: SpectralNewton) -> None:
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()

    for _ in range(2):
        step(model, opt)
    clone = copy.deepcopy(model)
    opt2 = SpectralNewton.for_model(clone, lr=0.05, mode=mode, weight_decay=0.01)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # through bytes, as a checkpoint would
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(2):
        step(model, opt)
        step(clone, opt2)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)
    assert any("momentum_buffer" in s for s in opt2.state.values())


def test_normalized_mode_is_scale_invariant() -> None:
    """``normalized`` uses σ/σ_1, so G and 10·G give the same update (paper mode does not)."""
    g = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    outs = {}
    for mode in ("normalized", "paper"):
        for scale in (1.0, 10.0):
            w = nn.Parameter(torch.zeros(7, 5))
            opt = SpectralNewton([w], lr=1.0, momentum=0.0, mode=mode)  # type: ignore[arg-type]
            w.grad = g * scale
            opt.step()
            outs[mode, scale] = w.detach().clone()
    torch.testing.assert_close(outs["normalized", 1.0], outs["normalized", 10.0])
    assert not torch.allclose(outs["paper", 1.0], outs["paper", 10.0])
    sigma1 = float(torch.linalg.matrix_norm(g, 2))
    torch.testing.assert_close(
        outs["normalized", 1.0], -spectral_newton_direction(g / sigma1, 2.0, 0.1)
    )


def test_bad_groups_rejected() -> None:
    """Vectors in an SN group, unknown modes and bad momentum raise at construction."""
    with pytest.raises(ValueError, match="ndim"):
        SpectralNewton([nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="mode"):
        SpectralNewton([nn.Parameter(torch.zeros(3, 3))], mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="momentum"):
        SpectralNewton([nn.Parameter(torch.zeros(3, 3))], momentum=1.0)
