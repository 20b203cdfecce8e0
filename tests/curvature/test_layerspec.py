"""A parameter viewed as its (m, n) matrix and back: conv reshaping, HF Conv1D transposes,
fused row blocks, the QKV split and the unfold geometry of convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.curvature import layerspec
from workers.curvature.layerspec import ConvGeometry, LayerSpec, conv2d_geometry


def _spec(**kw: object) -> LayerSpec:
    base: dict[str, object] = {
        "name": "w",
        "kind": "linear",
        "parameter": "w",
        "module": "m",
        "shape": (6, 4),
        "param_shape": (6, 4),
    }
    return LayerSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({}, (6, 4)),
        ({"shape": (3, 8), "param_shape": (3, 2, 2, 2), "kind": "conv"}, (3, 2, 2, 2)),
        ({"shape": (4, 6), "param_shape": (6, 4), "transpose": True}, (6, 4)),
    ],
)
def test_matrix_and_embed_are_inverse(kw: dict[str, object], param: tuple[int, ...]) -> None:
    spec = _spec(**kw)
    t = torch.arange(float(torch.Size(param).numel())).reshape(param)
    m = spec.matrix(t)
    assert tuple(m.shape) == spec.shape
    torch.testing.assert_close(spec.embed(m), t)
    if spec.transpose:
        torch.testing.assert_close(m, t.t())
    else:
        torch.testing.assert_close(m, t.reshape(param[0], -1))  # row-major, F.unfold order


def test_qkv_row_blocks_and_their_embedding() -> None:
    fused = _spec(kind="attn_qkv", shape=(6, 4))
    q, k, v, whole = layerspec.split_qkv(fused, ("x",))
    assert [s.kind for s in (q, k, v)] == ["attn_q", "attn_k", "attn_v"] and whole is fused
    assert [s.rows for s in (q, k, v)] == [(0, 2), (2, 4), (4, 6)] and q.shape == (2, 4)
    t = torch.arange(24.0).reshape(6, 4)
    torch.testing.assert_close(k.matrix(t), t[2:4])
    emb = k.embed(torch.ones(2, 4))
    assert float(emb[2:4].sum()) == 8.0 and float(emb.sum()) == 8.0  # zero outside the block
    assert layerspec.split_qkv(_spec(shape=(5, 4)), ()) == [_spec(shape=(5, 4))]
    specs = layerspec.mha_specs("attn", nn.MultiheadAttention(4, 2))
    assert [s.name for s in specs] == [
        "attn.in_proj:q",
        "attn.in_proj:k",
        "attn.in_proj:v",
        "attn.in_proj",
    ]


def test_conv_geometry_and_kinds() -> None:
    assert conv2d_geometry(nn.Conv2d(2, 3, 3, stride=2, padding=1)) == ConvGeometry(
        (3, 3), (2, 2), (1, 1), (1, 1)
    )
    assert conv2d_geometry(nn.Conv2d(2, 3, 3, padding="same")) == ConvGeometry(
        (3, 3), (1, 1), (1, 1), (1, 1)
    )
    assert conv2d_geometry(nn.Conv2d(2, 3, 2, padding="same")) is None  # odd total padding
    assert conv2d_geometry(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")) is None
    assert all(layerspec.is_layer_kind(k) for k in layerspec.KINDS)
    assert not layerspec.is_layer_kind("attn") and not layerspec.is_layer_kind(3)
