"""Structural test: is the model output piecewise linear in one weight? (docs/engine.md)

If every operation between a weight W and the model output f is piecewise linear in W
(linear maps, ReLU/LeakyReLU, max/avg pooling, eval-mode batch norm, residual adds,
reshapes, dropout off), then on each linear piece ∂²f/∂W² = 0 and the layer-block Hessian
of L(f(W)) equals its generalised Gauss–Newton part exactly: H = Jᵀ H_L J, with H_L the
Hessian of the loss in the outputs (which may be anything: cross-entropy is fine).

The proof is a forward pass under a ``TorchFunctionMode`` that tracks which tensors depend on
W ("tainted") and checks every torch call that receives a tainted tensor:

* ops linear in their tainted arguments jointly (add, sum, reshape, indexing, ...) pass;
* ops linear in each argument separately (mul, matmul, linear, conv, ...) pass only when at
  most one operand is tainted (W·W or q·kᵀ with both from W is bilinear: refused);
* piecewise-linear ops (relu, max pool, ...) pass; batch norm and dropout only in eval mode;
* anything else that touches a tainted tensor (tanh, GELU, sigmoid, softmax, layer norm,
  an op this list does not know) refuses: "cannot prove" means "not GGN-exact".

The output must itself be tainted (a weight the output does not depend on is refused too).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from workers.curvature.measurement import Batch


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Linear in all tensor arguments together (sums, copies, views, selections).
_JOINTLY_LINEAR = _ops(
    """add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ neg __neg__
    negative sum mean cat concat concatenate stack hstack vstack reshape view view_as
    flatten unflatten permute transpose transpose_ t mT contiguous __getitem__ split
    split_with_sizes chunk unbind squeeze unsqueeze expand expand_as repeat tile pad clone
    narrow select index_select gather take_along_dim roll flip movedim moveaxis swapaxes
    swapdims to type float double half bfloat16 cpu cuda diagonal tril triu cumsum trace
    unfold fold pixel_shuffle pixel_unshuffle channel_shuffle zero_pad2d __setitem__ copy_
    masked_select reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d"""
)
# Linear in each argument: allowed with one tainted operand.
_MULTILINEAR = _ops(
    """mul mul_ __mul__ __rmul__ __imul__ matmul __matmul__ __rmatmul__ mm bmm mv dot linear
    bilinear conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d einsum
    addmm addmm_ addbmm baddbmm addmv outer inner tensordot kron embedding embedding_bag"""
)
# Linear in the first argument only (numerator, masked input): the others must be clean.
_LINEAR_IN_FIRST = _ops(
    """div div_ __truediv__ __itruediv__ true_divide masked_fill masked_fill_"""
)
# Piecewise linear (kinks form a measure-zero set; autograd differentiates the piece).
_PIECEWISE = _ops(
    """relu relu_ leaky_relu leaky_relu_ hardtanh hardtanh_ relu6 prelu rrelu abs absolute
    max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
    max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
    adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices avg_pool1d avg_pool2d
    avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d max min amax amin
    maximum minimum fmax fmin clamp clamp_ clip clip_ where threshold threshold_
    max_unpool1d max_unpool2d"""
)
# Affine in the input in eval mode only: (name of the mode flag, its position, its default).
_MODE_ARG = {"batch_norm": ("training", 5, False), "dropout": ("training", 2, True)}
_DROPOUTS = _ops("""dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout""")


@dataclass(frozen=True)
class Structure:
    """The verdict of the structural test for one weight."""

    piecewise_linear: bool
    reason: str | None = None  # why not, e.g. "gelu above the layer"


class _TaintMode(TorchFunctionMode):
    """Records which tensors depend on the seed tensor and refuses non-piecewise-linear ops."""

    def __init__(self, seed: torch.Tensor) -> None:
        super().__init__()
        self._tainted: dict[int, weakref.ref[torch.Tensor]] = {}
        self._mark(seed)
        self.refusal: str | None = None

    def _mark(self, t: torch.Tensor) -> None:
        self._tainted[id(t)] = weakref.ref(t)

    def is_tainted(self, t: object) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        ref = self._tainted.get(id(t))
        return ref is not None and ref() is t

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        leaves, _ = tree_flatten((args, kwargs))
        tainted = [x for x in leaves if self.is_tainted(x)]
        out = func(*args, **kwargs)
        if not tainted:
            return out
        name = getattr(func, "__name__", repr(func))
        if not _returns_tensor(out):
            return out  # shape, dtype, size(), item(): no tensor flows on
        if name != "__get__" and self.refusal is None:  # properties (.T, .mT) are views
            self.refusal = _check(name, args, kwargs, tainted, self.is_tainted)
        if name in ("__setitem__", "copy_", "masked_scatter_") and args:
            self._mark(args[0])
        for x in tree_flatten(out)[0]:
            if isinstance(x, torch.Tensor):
                self._mark(x)
        return out


def _returns_tensor(out: object) -> bool:
    return out is None or any(isinstance(x, torch.Tensor) for x in tree_flatten(out)[0])


def _training(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    key, index, default = _MODE_ARG["dropout" if name in _DROPOUTS else name]
    if key in kwargs:
        return bool(kwargs[key])
    return bool(args[index]) if len(args) > index else default


def _check(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tainted: list[torch.Tensor],
    is_tainted: Callable[[object], bool],
) -> str | None:
    """None if ``name`` is piecewise linear in its tainted arguments, else the reason."""
    if name in _JOINTLY_LINEAR or name in _PIECEWISE:
        return None
    if name in _MULTILINEAR:
        distinct = {id(t) for t in tainted}
        return None if len(distinct) == 1 else f"{name} of two tensors that depend on the layer"
    if name in _LINEAR_IN_FIRST:
        rest, _ = tree_flatten((args[1:], kwargs))
        if any(is_tainted(x) for x in rest):
            return f"{name} by a layer-dependent value"
        return None
    if name == "batch_norm" or name in _DROPOUTS:
        if name == "batch_norm" and any(is_tainted(x) for x in args[1:5]):
            return "batch_norm statistics depend on the layer"
        p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
        if not _training(name, args, kwargs) or (name in _DROPOUTS and float(p) == 0.0):
            return None
        return f"{name} in training mode"
    return f"{name} above the layer"


def output_structure(model: nn.Module, batch: Batch, parameter: str) -> Structure:
    """Run one forward of ``batch`` and decide whether f is piecewise linear in ``parameter``."""
    weight = dict(model.named_parameters())[parameter]
    mode = _TaintMode(weight)
    with torch.no_grad(), mode:
        out = batch.forward(model)
    if mode.refusal is not None:
        return Structure(False, mode.refusal)
    if not mode.is_tainted(out):
        return Structure(False, "the model output does not depend on the layer")
    return Structure(True)
