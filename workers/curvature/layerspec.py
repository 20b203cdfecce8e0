"""One analysable matrix of a model (``LayerSpec``) and how to view a parameter as it.

A matrix W is (out × in). A convolution's weight C_out × C_in × k… is viewed as
C_out × (C_in·k…), the ``F.unfold`` patch order; a transposed convolution's C_in × C_out × k…
as C_in × (C_out·k…), the matrix of the convolution it is the adjoint of (the same singular
values as the transposed map); a bilinear weight out × in₁ × in₂ as out × (in₁·in₂), the linear
map of x₁ ⊗ x₂. Hugging Face ``Conv1D`` weights are stored (in, out) and are transposed; fused
QKV parameters are split into row blocks (and also reported fused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeGuard, get_args

import torch
from torch import nn

from api_schemas import LayerKind

KINDS: tuple[LayerKind, ...] = get_args(LayerKind)
_QKV_PARTS: tuple[tuple[str, LayerKind], ...] = (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"))


def is_layer_kind(value: object) -> TypeGuard[LayerKind]:
    return value in KINDS


@dataclass(frozen=True)
class ConvGeometry:
    """What ``F.unfold`` needs to rebuild the im2col patches of a Conv2d input."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


@dataclass(frozen=True)
class LayerSpec:
    """One analysable matrix: where it lives in the model and how to view it as (m, n)."""

    name: str
    kind: LayerKind
    parameter: str
    module: str
    shape: tuple[int, int]
    param_shape: tuple[int, ...]
    rows: tuple[int, int] | None = None
    transpose: bool = False
    conv: ConvGeometry | None = None
    module_type: str = "Linear"
    flags: tuple[str, ...] = field(default_factory=tuple)
    uses: int = 0  # uses of the parameter in the traced forward (0: not traced)
    softmax_rank_bound: bool = False  # the weight's one use writes the logits: 1ᵀG = 0

    def matrix(self, tensor: torch.Tensor) -> torch.Tensor:
        """View a parameter-shaped tensor as this layer's (m, n) matrix (a row block if fused)."""
        full = tensor.t() if self.transpose else tensor.reshape(tensor.shape[0], -1)
        if self.rows is not None:
            full = full[self.rows[0] : self.rows[1]]
        return full

    def embed(self, matrix: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`matrix`: a parameter-shaped tensor, zero outside the row block."""
        if self.rows is not None:
            full_rows = self.param_shape[1] if self.transpose else self.param_shape[0]
            padded = matrix.new_zeros((full_rows, matrix.shape[1]))
            padded[self.rows[0] : self.rows[1]] = matrix
            matrix = padded
        if self.transpose:
            return matrix.t().contiguous()
        return matrix.reshape(self.param_shape).contiguous()


def plain_matrix(
    name: str,
    kind: LayerKind,
    parameter: str,
    module: str,
    weight: torch.Tensor,
    *,
    module_type: str,
    flags: tuple[str, ...] = ("kfac_unavailable",),
    uses: int = 0,
) -> LayerSpec:
    """A 2-D ``weight`` that is its own (m, n) matrix, seen without K-FAC factors (an
    attention projection or a weight found in the graph)."""
    shape = (int(weight.shape[0]), int(weight.shape[1]))
    return LayerSpec(
        name,
        kind,
        parameter,
        module,
        shape,
        tuple(weight.shape),
        module_type=module_type,
        flags=flags,
        uses=uses,
    )


def split_qkv(spec: LayerSpec, flags: tuple[str, ...]) -> list[LayerSpec]:
    m, n = spec.shape
    if m % 3 != 0:
        return [spec]
    d = m // 3
    out = [
        LayerSpec(
            name=f"{spec.name}:{part}",
            kind=kind,
            parameter=spec.parameter,
            module=spec.module,
            shape=(d, n),
            param_shape=spec.param_shape,
            rows=(i * d, (i + 1) * d),
            transpose=spec.transpose,
            module_type=spec.module_type,
            flags=flags,
            uses=spec.uses,
        )
        for i, (part, kind) in enumerate(_QKV_PARTS)
    ]
    return [*out, spec]


def mha_specs(path: str, mod: nn.MultiheadAttention, uses: int = 0) -> list[LayerSpec]:
    """The fused in-projection of ``nn.MultiheadAttention`` and its q/k/v row blocks."""
    if not mod._qkv_same_embed_dim or mod.in_proj_weight is None:
        return []
    pname = f"{path}.in_proj_weight"
    fused = plain_matrix(
        f"{path}.in_proj",
        "attn_qkv",
        pname,
        path,
        mod.in_proj_weight,
        module_type="MultiheadAttention",
        uses=uses,
    )
    return split_qkv(fused, ("kfac_unavailable",))


def conv2d_geometry(mod: nn.Conv2d) -> ConvGeometry | None:
    """The unfold geometry of a zero-padded ``Conv2d``; None when patches cannot be rebuilt by
    ``F.unfold`` (a non-zero padding mode, or ``padding='same'`` with an odd total padding)."""
    kernel, dilation = _pair(mod.kernel_size), _pair(mod.dilation)
    if mod.padding_mode != "zeros":
        return None
    if mod.padding == "valid":
        padding = (0, 0)
    elif mod.padding == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        if any(t % 2 for t in totals):
            return None
        padding = (totals[0] // 2, totals[1] // 2)
    else:
        padding = _pair(mod.padding)
    return ConvGeometry(kernel, _pair(mod.stride), padding, dilation)


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, tuple):
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))  # type: ignore[call-overload]
