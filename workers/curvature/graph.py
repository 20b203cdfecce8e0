"""One traced forward: every op, the data flow between ops, and how each op uses a parameter.

A ``TorchFunctionMode`` sees every torch-level call of a real forward (module calls,
functional calls such as ``F.linear(x, W)`` or ``F.embedding(idx, W)``, tensor methods and
the ``torch.ops.aten`` calls of a ``torch.export`` program), so it finds the parameters the
forward really uses and how, including tied or shared ones, on any model that runs.
A parameter enters an op either directly or through a parameter-only view (``W.t()``,
``W.T``, ``W.to(dtype)``); the op then *uses* it in a role:

* ``linear``: z = x Mᵀ with M the (out × in) matrix (``F.linear``; ``x @ W`` and
  ``torch.addmm(b, x, W)``, the Hugging Face ``Conv1D`` layout, store M transposed);
* ``conv`` / ``conv_transpose``: a convolution of any dimension (weight C_out × C_in × k…,
  resp. C_in × C_out × k… for a transposed one);
* ``bilinear``: z_o = x₁ᵀ W_o x₂, a linear map of x₁ ⊗ x₂;
* ``embedding``: a row gather (not a matrix product);
* ``mha``: ``nn.MultiheadAttention``'s fused kernel; ``other``: anything else (a norm's gain,
  a positional table added to the tokens, …).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from workers.curvature.measurement import output_tensor, set_train_mode

MATRIX_ROLES = frozenset({"linear", "conv", "conv_transpose", "bilinear"})
"""Roles in which a parameter acts as a matrix on the data (what curvprof analyses)."""

_ALIASES = {
    "__matmul__": "matmul",
    "__rmatmul__": "matmul",
    "mm": "matmul",
    "bmm": "matmul",
    "_softmax": "softmax",
    "_safe_softmax": "softmax",
    "__add__": "add",
    "__radd__": "add",
    "__iadd__": "add",
    "add_": "add",
    "__sub__": "sub",
    "__rsub__": "sub",
    "__mul__": "mul",
    "__rmul__": "mul",
    "__imul__": "mul",
    "mul_": "mul",
    "__truediv__": "div",
    "div_": "div",
    "masked_fill_": "masked_fill",
    "_scaled_dot_product_flash_attention_for_cpu": "scaled_dot_product_attention",
    "_to_copy": "to",
    "convolution": "conv",
}
_VIEW_LIKE = frozenset({"to", "float", "double", "half", "contiguous", "detach", "clone", "type"})
_TRANSPOSES = frozenset({"t", "T", "mT", "transpose", "permute", "numpy_T"})


@dataclass(frozen=True)
class WeightUse:
    """One use of a parameter by one op of the traced forward."""

    parameter: str
    role: str
    node: int
    transpose: bool = False  # the (out × in) matrix is the stored parameter transposed
    module: str | None = None  # the module whose own call made this use (None: functional)
    shape: tuple[int, int] = (0, 0)  # the (out × in) matrix: rows, then everything else


@dataclass
class OpNode:
    """One op: its name, the data tensors it read (producer node, output index) and the
    shapes of the tensors it returned."""

    index: int
    op: str
    inputs: list[tuple[int, int]]
    shapes: list[tuple[int, ...]]
    uses: list[WeightUse] = field(default_factory=list)


@dataclass
class ForwardGraph:
    """The traced forward: ops in call order, the model output's producer, parameter uses."""

    nodes: list[OpNode]
    output: int | None
    uses: list[WeightUse]
    children: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.nodes:
            for parent, _ in node.inputs:
                self.children.setdefault(parent, []).append(node.index)

    def uses_of(self, parameter: str) -> list[WeightUse]:
        return [u for u in self.uses if u.parameter == parameter]


def op_name(func: object) -> str:
    """A torch callable's plain name: ``F.linear``, ``Tensor.linear`` and ``aten.linear`` are
    all ``linear``; a property getter (``Tensor.T``) is the property's name."""
    name = getattr(func, "_opname", None) or getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return _ALIASES.get(name, name)


def _role(op: str, position: int | str, n_args: int, args: tuple[object, ...]) -> str:
    """The role of the tensor argument at ``position`` (int, or a keyword) of ``op``."""
    if op == "linear":
        return "linear" if position in (1, "weight") else "bias"
    if op in ("matmul", "addmm"):
        right = 2 if op == "addmm" else 1
        if position in (right, "mat2", "other"):
            return "matmul_right"
        return "matmul_left" if position == right - 1 else "bias"
    if op in ("conv1d", "conv2d", "conv3d"):
        return "conv" if position in (1, "weight") else "bias"
    if op in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        return "conv_transpose" if position in (1, "weight") else "bias"
    if op == "conv":  # aten.convolution(input, weight, bias, stride, padding, dilation, transposed)
        transposed = len(args) > 6 and bool(args[6])
        if position == 1:
            return "conv_transpose" if transposed else "conv"
        return "bias"
    if op == "embedding":  # F.embedding(input, weight); aten.embedding(weight, indices)
        aten = n_args >= 2 and isinstance(args[0], torch.Tensor) and args[0].is_floating_point()
        return "embedding" if position == (0 if aten else 1) or position == "weight" else "other"
    if op == "bilinear":
        return "bilinear" if position in (2, "weight") else "bias"
    if op == "multi_head_attention_forward":
        return "mha"
    return "other"


class _Recorder(TorchFunctionMode):
    """Records every call with a tensor argument as an :class:`OpNode`."""

    def __init__(self, named: list[tuple[str, nn.Parameter]], owners: dict[int, set[str]]) -> None:
        super().__init__()
        self.parameters = {id(p): name for name, p in named}
        self.ids = {name: id(p) for name, p in named}
        self.shapes = {name: tuple(p.shape) for name, p in named}
        self.owners = owners  # id(param) -> paths of the modules that own it
        self.nodes: list[OpNode] = []
        self.producer: dict[int, tuple[int, int]] = {}
        self.derived: dict[int, list[tuple[str, bool, bool]]] = {}  # computed from parameters
        self.keep: list[object] = []  # parameter views stay alive, so their ids stay unique
        self.stack: list[str] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op = op_name(func)
        tagged = [(i, a) for i, a in enumerate(args)] + list(kwargs.items())
        data: list[tuple[int, int]] = []
        reads_data = False
        params: list[tuple[int | str, str, bool, bool]] = []
        for position, value in tagged:
            for leaf in tree_flatten(value)[0]:
                if not isinstance(leaf, torch.Tensor):
                    continue
                refs = self._parameter_refs(leaf)
                if refs:
                    params.extend((position, *ref) for ref in refs)
                    continue
                reads_data = True  # the model's inputs, buffers and constants have no producer
                if id(leaf) in self.producer:
                    data.append(self.producer[id(leaf)])
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outputs:
            return out
        if params and not reads_data:  # a view or function of parameters alone
            exact = len(params) == 1 and len(outputs) == 1 and params[0][3]
            flip = op in _TRANSPOSES and outputs[0].ndim == 2
            exact = exact and (flip or op in _VIEW_LIKE)
            refs = [(name, transposed != flip, exact) for _, name, transposed, _ in params]
            for t in outputs:
                self.derived[id(t)] = refs
                self.keep.append(t)
            return out
        node = OpNode(len(self.nodes), op, data, [tuple(t.shape) for t in outputs])
        for position, name, transposed, exact in params:
            use = self._use(op, position, name, transposed, node.index, args)
            node.uses.append(use if exact else replace(use, role="other"))
        self.nodes.append(node)
        for i, t in enumerate(outputs):  # forgotten when the tensor dies: ids stay unique
            self.producer[id(t)] = (node.index, i)
            weakref.finalize(t, self.producer.pop, id(t), None)
        return out

    def _parameter_refs(self, tensor: torch.Tensor) -> list[tuple[str, bool, bool]]:
        """(parameter, transposed, an exact view) for each parameter ``tensor`` comes from."""
        name = self.parameters.get(id(tensor))
        if name is not None:
            return [(name, False, True)]
        return self.derived.get(id(tensor), [])

    def _use(
        self,
        op: str,
        position: int | str,
        name: str,
        transposed: bool,
        node: int,
        args: tuple[object, ...],
    ) -> WeightUse:
        role = _role(op, position, len(args), args)
        layout = transposed
        if role == "matmul_right":  # x @ M with M (in × out): the matrix is Mᵀ
            role, layout = "linear", not transposed
        elif role == "matmul_left":  # M @ x with M (out × in)
            role = "linear"
        elif role in ("conv", "conv_transpose", "bilinear") and transposed:
            role = "other"  # a convolution of a transposed view: not a layout we map
        owner = None
        if self.stack and self.stack[-1] in self.owners.get(self.ids[name], set()):
            owner = self.stack[-1]
        dims = self.shapes[name]
        rows = dims[1] if layout and len(dims) == 2 else dims[0]
        cols = dims[0] if layout and len(dims) == 2 else math.prod(dims[1:])
        return WeightUse(name, role, node, layout, owner, (int(rows), int(cols)))


@contextlib.contextmanager
def _module_stack(model: nn.Module, stack: list[str]) -> Iterator[None]:
    handles = []
    for path, module in model.named_modules():

        def pre(_m: nn.Module, _a: object, path: str = path) -> None:
            stack.append(path)

        def post(_m: nn.Module, _a: object, _o: object) -> None:
            if stack:
                stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


Forward = Callable[[nn.Module], torch.Tensor]
"""Runs one forward of a model and returns the output the loss is taken on."""


def example_forward(
    inputs: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    static_batch: int | None = None,
    targets: torch.Tensor | None = None,
) -> list[Forward]:
    """The forward of the first example of ``inputs``, then of all of them, or of the first
    ``static_batch`` (a program exported with a static batch runs that size only); floating
    inputs are cast to the model's dtype. ``targets`` reach a model that reads them
    (``forward_takes_targets``: an encoder-decoder's decoder inputs are its shifted targets)."""

    def on(rows: int) -> Forward:
        def run(model: nn.Module) -> torch.Tensor:
            ref = next((p for p in model.parameters() if p.is_floating_point()), None)
            x = inputs[:rows]
            if ref is not None:
                x = x.to(ref.device, ref.dtype) if x.is_floating_point() else x.to(ref.device)
            kwargs: dict[str, torch.Tensor] = {}
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask[:rows].to(x.device)
            if targets is not None and getattr(model, "forward_takes_targets", False):
                kwargs["targets"] = targets[:rows].to(x.device)
            return output_tensor(model(x, **kwargs))

        return run

    n = static_batch or int(inputs.shape[0])
    return [on(1), on(n)] if n > 1 else [on(1)]


def trace_forward(model: nn.Module, forwards: Forward | Sequence[Forward]) -> ForwardGraph:
    """Record the first of ``forwards`` that runs, once, in eval mode without gradients."""
    candidates = [forwards] if callable(forwards) else list(forwards)
    for index, forward in enumerate(candidates):
        try:
            return _trace(model, forward)
        except (RuntimeError, AssertionError, ValueError):
            if index + 1 == len(candidates):
                raise
    raise ValueError("no forward to trace")


def _trace(model: nn.Module, forward: Forward) -> ForwardGraph:
    named = list(model.named_parameters(remove_duplicate=True))
    owners: dict[int, set[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), set()).add(path)
    recorder = _Recorder(named, owners)
    was_training = model.training
    set_train_mode(model, False)
    try:
        with _module_stack(model, recorder.stack), torch.no_grad(), recorder:
            out = forward(model)
    finally:
        set_train_mode(model, was_training)
    produced = recorder.producer.get(id(out))
    uses = [u for node in recorder.nodes for u in node.uses]
    return ForwardGraph(recorder.nodes, produced[0] if produced else None, uses)
