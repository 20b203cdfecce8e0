"""Layer inventory: every weight matrix the forward really uses, with its kind (docs/engine.md).

With an example forward, one traced forward (``graph.py``) finds every use of every parameter:
a module call, a functional use (``F.linear(x, W)``, ``x @ W``), an embedding lookup,
shared or tied across uses. A parameter analysed as a matrix is one used as a matrix on the
data (linear, convolution of any dimension, transposed or not, bilinear) in one layout;
kinds come from structure (``structure.py``), ``model.curvprof_kinds`` (parameter name ->
kind) wins where the model ships it. Every other parameter of two or more dimensions is in
``skipped`` with its reason. Without an example, module types and names decide
(``naming.py``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from api_schemas import LayerKind
from workers.curvature.graph import MATRIX_ROLES, Forward, ForwardGraph, WeightUse, trace_forward
from workers.curvature.layerspec import (
    KINDS,
    ConvGeometry,
    LayerSpec,
    conv2d_geometry,
    is_layer_kind,
    mha_specs,
    plain_matrix,
    split_qkv,
)
from workers.curvature.naming import is_hf_conv1d, names_inventory
from workers.curvature.structure import Structure, analyse

__all__ = ["KINDS", "ConvGeometry", "LayerSpec", "layer_inventory", "select_layers"]

_KIND_ORDER: tuple[LayerKind, ...] = (
    "head",
    "attn_qkv",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_o",
    "mlp_up",
    "mlp_down",
)


def layer_inventory(
    model: nn.Module, example: Forward | Sequence[Forward] | None = None
) -> tuple[list[LayerSpec], dict[str, str]]:
    """All analysable matrices of ``model`` in module order, and the skipped ones with reasons.

    ``example(model)`` runs one forward and returns the output the loss is taken on (several:
    the first that runs is traced; see :func:`~workers.curvature.graph.example_forward`);
    without it, names decide.
    """
    given: dict[str, object] = dict(getattr(model, "curvprof_kinds", {}) or {})
    explicit = {name: kind for name, kind in given.items() if is_layer_kind(kind)}
    unknown = sorted({str(kind) for kind in given.values() if not is_layer_kind(kind)})
    if unknown:
        raise ValueError(f"curvprof_kinds names an unknown layer kind {unknown[0]!r}")
    if example is None:
        return names_inventory(model, explicit)
    return graph_inventory(model, trace_forward(model, example), explicit)


def graph_inventory(
    model: nn.Module, graph: ForwardGraph, explicit: dict[str, LayerKind]
) -> tuple[list[LayerSpec], dict[str, str]]:
    """The inventory of ``model`` from its traced forward ``graph``."""
    structure = analyse(graph)
    modules = dict(model.named_modules())
    order = {path: i for i, path in enumerate(modules)}
    uses: dict[str, list[WeightUse]] = {}
    for use in graph.uses:
        uses.setdefault(use.parameter, []).append(use)
    specs: list[LayerSpec] = []
    skipped: dict[str, str] = {}
    for pname, param in model.named_parameters():
        path, _, leaf = pname.rpartition(".")
        label = path if leaf == "weight" and path else pname
        found = uses.get(pname, [])
        if any(u.role == "mha" for u in found):
            specs.extend(_mha(modules, path, leaf, pname, len(found)))
            continue
        matrix = [u for u in found if u.role in MATRIX_ROLES]
        if not matrix:
            if param.ndim >= 2 or _owned_by_layer(modules.get(path), leaf):
                skipped[label] = _why_not(graph, found)
            continue
        first = matrix[0]
        if any((u.role, u.transpose) != (first.role, first.transpose) for u in matrix):
            skipped[label] = "used as a matrix in more than one layout"
            continue
        module = modules.get(first.module) if first.module is not None else None
        groups = getattr(module, "groups", 1)
        if first.role in ("conv", "conv_transpose") and groups != 1:
            skipped[first.module or label] = f"grouped convolution (groups={groups}) skipped"
            continue
        specs.extend(_matrix_specs(pname, param.shape, found, matrix, module, structure, explicit))
    specs.sort(key=lambda s: order.get(s.module, len(order)))
    return specs, skipped


def _matrix_specs(
    pname: str,
    param_shape: tuple[int, ...],
    found: list[WeightUse],
    matrix: list[WeightUse],
    module: nn.Module | None,
    structure: Structure,
    explicit: dict[str, LayerKind],
) -> list[LayerSpec]:
    first = matrix[0]
    path = first.module if first.module is not None else pname.removesuffix(".weight")
    flags: list[str] = []
    if any(u.role == "embedding" for u in found):
        flags.append("tied_embedding")
    if len(matrix) > 1:
        flags.append("shared")
    conv = None
    if first.role == "linear":
        kind = _structural_kind(structure, matrix)
        hookable = isinstance(module, nn.Linear) or (module is not None and is_hf_conv1d(module))
    elif first.role == "bilinear":
        kind, hookable = _structural_kind(structure, matrix), False
    else:
        kind = "conv"
        conv = conv2d_geometry(module) if type(module) is nn.Conv2d else None
        hookable = conv is not None
    if not hookable or len(matrix) > 1:
        flags.append("kfac_unavailable")
    kind = explicit.get(pname) or explicit.get(f"{path}.weight") or kind
    spec = LayerSpec(
        name=path,
        kind=kind,
        parameter=pname,
        module=path,
        shape=first.shape,
        param_shape=tuple(param_shape),
        transpose=first.transpose,
        conv=conv,
        module_type=type(module).__name__ if module is not None else "functional",
        flags=tuple(flags),
        uses=len(found),
        softmax_rank_bound=len(found) == 1 and first.node in structure.logits,
    )
    if kind != "attn_qkv":
        return [spec]
    thirds = pname in explicit or f"{path}.weight" in explicit or first.node in structure.qkv_thirds
    return split_qkv(spec, spec.flags) if thirds else [spec]


def _structural_kind(structure: Structure, matrix: list[WeightUse]) -> LayerKind:
    kinds = {structure.kinds.get(u.node, "linear") for u in matrix}
    return next((k for k in _KIND_ORDER if k in kinds), "linear")


def _mha(
    modules: dict[str, nn.Module], path: str, leaf: str, pname: str, n_uses: int
) -> list[LayerSpec]:
    module = modules.get(path)
    if isinstance(module, nn.MultiheadAttention) and leaf == "in_proj_weight":
        return mha_specs(path, module, n_uses)
    owner, _, child = path.rpartition(".")
    parent = modules.get(owner)
    if leaf == "weight" and child == "out_proj" and isinstance(parent, nn.MultiheadAttention):
        weight = parent.out_proj.weight
        spec = plain_matrix(
            path, "attn_o", pname, path, weight, module_type="MultiheadAttention", uses=n_uses
        )
        return [spec]
    return []


def _owned_by_layer(module: nn.Module | None, leaf: str) -> bool:
    """A layer's weight (``nn.Linear`` and friends), whatever its number of dimensions."""
    return leaf == "weight" and isinstance(
        module, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
    )


def _why_not(graph: ForwardGraph, found: list[WeightUse]) -> str:
    if not found:
        return "not used by the forward (zero gradient)"
    if all(u.role == "embedding" for u in found):
        return "embedding lookup (a row gather, not a matrix product)"
    ops = sorted({graph.nodes[u.node].op for u in found if u.role != "embedding"})
    return f"used by {', '.join(ops)}, not as a matrix on the data"


def select_layers(specs: list[LayerSpec], pattern: str | None) -> list[LayerSpec]:
    """Layers whose name (or kind) matches the fnmatch glob; comma-separated globs are OR-ed."""
    if not pattern:
        return specs
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    return [s for s in specs if any(fnmatch.fnmatchcase(s.name, g) or s.kind == g for g in globs)]
