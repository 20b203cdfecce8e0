"""Layer kinds from names and module types: the fallback without an example forward.

Used when no forward can be traced (``layer_inventory(model)`` without an example); the graph
inventory (``inventory.py``) labels kinds from structure instead.
"""

from __future__ import annotations

import re

from torch import nn

from api_schemas import LayerKind
from workers.curvature.layerspec import (
    LayerSpec,
    conv2d_geometry,
    mha_specs,
    plain_matrix,
    split_qkv,
)

_Q = {"q", "q_proj", "query", "wq", "to_q", "q_lin"}
_K = {"k", "k_proj", "key", "wk", "to_k", "k_lin"}
_V = {"v", "v_proj", "value", "wv", "to_v", "v_lin"}
_QKV = {"qkv", "c_attn", "qkv_proj", "wqkv", "in_proj", "query_key_value", "to_qkv"}
_ATTN_OUT = {"out_proj", "o_proj", "wo", "to_out", "out_lin", "proj"}
_UP = {"fc1", "up_proj", "c_fc", "w1", "w3", "gate_proj", "lin1", "fc_in", "dense_h_to_4h"}
_DOWN = {"fc2", "down_proj", "w2", "lin2", "fc_out", "dense_4h_to_h"}
_HEAD = {"head", "lm_head", "classifier", "fc", "output", "score", "cls"}
_ATTN_PARENT = re.compile(r"(attn|attention|self_attn|mha)", re.IGNORECASE)
_MLP_PARENT = re.compile(r"(mlp|ffn|feed_forward|feedforward)", re.IGNORECASE)


def _kind_of_linear(module_path: str, is_last: bool) -> LayerKind:
    parts = module_path.split(".")
    leaf = parts[-1].lower()
    parent = ".".join(parts[:-1])
    in_attn = bool(_ATTN_PARENT.search(parent))
    if leaf in _QKV:
        return "attn_qkv"
    if leaf in _Q:
        return "attn_q"
    if leaf in _K:
        return "attn_k"
    if leaf in _V:
        return "attn_v"
    if leaf == "c_proj":
        return "attn_o" if in_attn else "mlp_down"
    if leaf in _ATTN_OUT and (in_attn or leaf != "proj"):
        return "attn_o"
    if leaf == "dense" and len(parts) >= 2:
        owner = parts[-2].lower()
        if owner == "intermediate":
            return "mlp_up"
        if owner == "output":
            return "attn_o" if in_attn else "mlp_down"
    if leaf in _UP:
        return "mlp_up"
    if leaf in _DOWN:
        return "mlp_down"
    if leaf in _HEAD or (is_last and not in_attn and not _MLP_PARENT.search(parent)):
        return "head"
    return "linear"


def names_inventory(
    model: nn.Module, explicit: dict[str, LayerKind]
) -> tuple[list[LayerSpec], dict[str, str]]:
    """Matrices by module type and kinds by name, for a model without an example forward
    (``explicit`` kinds win); the softmax rank bound is left to untied heads."""
    named = list(model.named_modules())
    linear_like = [p for p, mod in named if isinstance(mod, nn.Linear) or is_hf_conv1d(mod)]
    last_linear = linear_like[-1] if linear_like else None
    embeddings = {id(mod.weight) for _, mod in named if isinstance(mod, nn.Embedding)}
    canonical = {id(p): name for name, p in model.named_parameters()}
    specs: list[LayerSpec] = []
    skipped: dict[str, str] = {}
    seen: set[int] = set()
    for path, mod in named:
        weight = getattr(mod, "weight", None)
        if isinstance(mod, nn.MultiheadAttention):
            specs.extend(mha_specs(path, mod))
            continue
        if not isinstance(weight, nn.Parameter) or id(weight) in seen:
            continue
        # A shared (tied) weight is addressed by its canonical name in named_parameters().
        pname = canonical.get(id(weight), f"{path}.weight" if path else "weight")
        flags: tuple[str, ...] = ()
        if id(weight) in embeddings:
            flags = ("tied_embedding",)
        if isinstance(mod, nn.Conv2d):
            seen.add(id(weight))
            if mod.groups != 1:
                skipped[path] = f"grouped convolution (groups={mod.groups}) skipped"
                continue
            geo = conv2d_geometry(mod)
            c_out = weight.shape[0]
            spec = LayerSpec(
                path,
                explicit.get(pname, "conv"),
                pname,
                path,
                (c_out, weight[0].numel()),
                tuple(weight.shape),
                conv=geo,
                module_type="Conv2d",
                flags=() if geo is not None else ("kfac_unavailable",),
            )
            specs.append(spec)
        elif isinstance(mod, nn.Linear) or is_hf_conv1d(mod):
            seen.add(id(weight))
            transpose = is_hf_conv1d(mod)
            m, n = (weight.shape[1], weight.shape[0]) if transpose else tuple(weight.shape)
            kind = (
                explicit.get(pname)
                or explicit.get(f"{path}.weight")
                or _kind_of_linear(path, path == last_linear)
            )
            spec = LayerSpec(
                path,
                kind,
                pname,
                path,
                (int(m), int(n)),
                tuple(weight.shape),
                transpose=transpose,
                module_type=type(mod).__name__,
                flags=flags,
                softmax_rank_bound=kind == "head" and not flags,
            )
            specs.extend(split_qkv(spec, flags) if kind == "attn_qkv" else [spec])
    if not specs:
        specs = _flat_inventory(model, explicit)
    return specs, skipped


def _flat_inventory(model: nn.Module, explicit: dict[str, LayerKind]) -> list[LayerSpec]:
    """Fallback for flattened programs (``torch.export``): matrices by parameter shape and name."""
    params = [(n, p) for n, p in model.named_parameters() if n.endswith("weight")]
    two_d = [n for n, p in params if p.ndim == 2]
    specs: list[LayerSpec] = []
    for pname, p in params:
        module = pname.rsplit(".", 1)[0] if "." in pname else pname
        lowered = module.lower()
        if any(t in lowered for t in ("emb", "wte", "wpe", "norm", "ln_", "bn")):
            continue
        if p.ndim == 4:
            specs.append(
                LayerSpec(
                    module,
                    explicit.get(pname, "conv"),
                    pname,
                    module,
                    (int(p.shape[0]), int(p[0].numel())),
                    tuple(p.shape),
                    module_type="graph",
                    flags=("kfac_unavailable", "kind_from_shape"),
                )
            )
        elif p.ndim == 2:
            kind = explicit.get(pname) or _kind_of_linear(module, pname == two_d[-1])
            spec = plain_matrix(module, kind, pname, module, p, module_type="graph")
            specs.extend(split_qkv(spec, spec.flags) if kind == "attn_qkv" else [spec])
    return specs


def is_hf_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf")
