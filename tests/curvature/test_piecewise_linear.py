"""The structural test that decides whether a layer block can equal its GGN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.curvature.models import MLP, MLPWith, PiecewiseLinearCNN, TinyTransformer
from workers.curvature import layer_inventory
from workers.curvature.measurement import make_batch
from workers.curvature.piecewise_linear import output_structure


def verdicts(model: nn.Module, x: torch.Tensor, *, eval_mode: bool = True) -> dict[str, str | None]:
    """Layer name -> None (piecewise linear) or the refusal reason."""
    if eval_mode:
        model.eval()
    batch = make_batch(
        x, torch.zeros(x.shape[0], dtype=torch.long), "cross_entropy", dtype=torch.float32
    )
    specs, _ = layer_inventory(model)
    out = {}
    for spec in specs:
        s = output_structure(model, batch, spec.parameter)
        assert s.piecewise_linear == (s.reason is None)
        out[spec.name] = s.reason
    return out


def test_relu_mlp_and_piecewise_cnn_are_piecewise_linear_everywhere() -> None:
    assert set(verdicts(MLP((5, 7, 6, 3), "relu"), torch.randn(3, 5)).values()) == {None}
    assert set(verdicts(PiecewiseLinearCNN(), torch.randn(3, 1, 4, 4)).values()) == {None}


@pytest.mark.parametrize(
    ("between", "op"),
    [
        (nn.Tanh(), "tanh"),
        (nn.GELU(), "gelu"),
        (nn.Sigmoid(), "sigmoid"),
        (nn.LayerNorm(6), "layer_norm"),
        (nn.Softmax(dim=-1), "softmax"),
    ],
)
def test_smooth_op_above_refuses_only_the_layers_below_it(between: nn.Module, op: str) -> None:
    v = verdicts(MLPWith(between), torch.randn(3, 5))
    assert v["fc1"] == f"{op} above the layer"
    assert v["fc2"] is None and v["head"] is None


def test_attention_refuses_softmax_layer_norm_gelu_and_bilinear_use() -> None:
    v = verdicts(TinyTransformer(4, 3), torch.randn(2, 5, 4))
    assert v["attn.q_proj"] == v["attn.k_proj"] == "softmax above the layer"
    assert v["attn.v_proj"] == "layer_norm above the layer"
    assert v["mlp.fc1"] == "gelu above the layer"
    assert v["mlp.fc2"] is None and v["head"] is None
    fused = verdicts(TinyTransformer(4, 3, fused=True), torch.randn(2, 5, 4))
    assert fused["attn.qkv"] == "matmul of two tensors that depend on the layer"


def test_training_mode_batch_norm_and_dropout_refuse() -> None:
    model = PiecewiseLinearCNN()
    model.eval()
    model.bn.train()
    x = torch.randn(3, 1, 4, 4)
    assert verdicts(model, x, eval_mode=False)["conv1"] == "batch_norm in training mode"
    model.eval()
    model.drop.train()
    assert verdicts(model, x, eval_mode=False)["conv1"] == "dropout in training mode"


def test_weight_used_twice_bilinearly_and_unused_weight_refuse() -> None:
    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.fc(x)
            return self.head(z * z.T.sum(1))  # quadratic in fc.weight, through a property view

    v = verdicts(Square(), torch.randn(3, 4))
    assert v["fc"] == "mul of two tensors that depend on the layer"
    assert v["unused"] == "the model output does not depend on the layer"
