"""Layer inventory: every analysable weight matrix of a model, with its kind (science.md §2).

A matrix W is (out x in). Conv2d weights are viewed as C_out x (C_in*kh*kw), which matches
``F.unfold`` patch ordering; fused QKV parameters are split into row blocks (and also reported
fused); Hugging Face ``Conv1D`` weights are stored (in, out) and are transposed.
Embeddings, norms and biases are not analysed.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import get_args

import torch
from torch import nn

from api_schemas import LayerKind

KINDS: tuple[str, ...] = get_args(LayerKind)

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
    kind: str
    parameter: str
    module: str
    shape: tuple[int, int]
    param_shape: tuple[int, ...]
    rows: tuple[int, int] | None = None
    transpose: bool = False
    conv: ConvGeometry | None = None
    module_type: str = "Linear"
    flags: tuple[str, ...] = field(default_factory=tuple)

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


def _kind_of_linear(module_path: str, is_last: bool) -> str:
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


def _split_qkv(spec: LayerSpec, flags: tuple[str, ...]) -> list[LayerSpec]:
    m, n = spec.shape
    if m % 3 != 0:
        return [spec]
    d = m // 3
    out = [
        LayerSpec(
            name=f"{spec.name}:{part}",
            kind=f"attn_{part}",
            parameter=spec.parameter,
            module=spec.module,
            shape=(d, n),
            param_shape=spec.param_shape,
            rows=(i * d, (i + 1) * d),
            transpose=spec.transpose,
            module_type=spec.module_type,
            flags=flags,
        )
        for i, part in enumerate(("q", "k", "v"))
    ]
    return [*out, spec]


def layer_inventory(model: nn.Module) -> tuple[list[LayerSpec], dict[str, str]]:
    """All analysable matrices of ``model`` in registration order, and skipped ones with reasons.

    Kinds come from ``model.curvprof_kinds`` (parameter name -> kind) when the model ships it,
    otherwise from module types and names.
    """
    explicit: dict[str, str] = dict(getattr(model, "curvprof_kinds", {}) or {})
    unknown = sorted({kind for kind in explicit.values() if kind not in KINDS})
    if unknown:
        raise ValueError(f"curvprof_kinds names an unknown layer kind {unknown[0]!r}")
    named = list(model.named_modules())
    linear_like = [p for p, mod in named if isinstance(mod, nn.Linear) or _is_hf_conv1d(mod)]
    last_linear = linear_like[-1] if linear_like else None
    embeddings = {id(mod.weight) for _, mod in named if isinstance(mod, nn.Embedding)}
    canonical = {id(p): name for name, p in model.named_parameters()}
    specs: list[LayerSpec] = []
    skipped: dict[str, str] = {}
    seen: set[int] = set()
    for path, mod in named:
        weight = getattr(mod, "weight", None)
        if isinstance(mod, nn.MultiheadAttention):
            specs.extend(_mha_specs(path, mod))
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
            geo = ConvGeometry(
                _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding), _pair(mod.dilation)
            )
            if isinstance(mod.padding, str):
                skipped[path] = "convolution with string padding skipped"
                continue
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
            )
            specs.append(spec)
        elif isinstance(mod, nn.Linear) or _is_hf_conv1d(mod):
            seen.add(id(weight))
            transpose = _is_hf_conv1d(mod)
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
            )
            specs.extend(_split_qkv(spec, flags) if kind == "attn_qkv" else [spec])
    if not specs:
        specs = _graph_inventory(model, explicit)
    return specs, skipped


def _mha_specs(path: str, mod: nn.MultiheadAttention) -> list[LayerSpec]:
    if not mod._qkv_same_embed_dim or mod.in_proj_weight is None:
        return []
    pname = f"{path}.in_proj_weight"
    w = mod.in_proj_weight
    fused = LayerSpec(
        f"{path}.in_proj",
        "attn_qkv",
        pname,
        path,
        (int(w.shape[0]), int(w.shape[1])),
        tuple(w.shape),
        module_type="MultiheadAttention",
        flags=("kfac_unavailable",),
    )
    return _split_qkv(fused, ("kfac_unavailable",))


def _graph_inventory(model: nn.Module, explicit: dict[str, str]) -> list[LayerSpec]:
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
            spec = LayerSpec(
                module,
                kind,
                pname,
                module,
                (int(p.shape[0]), int(p.shape[1])),
                tuple(p.shape),
                module_type="graph",
                flags=("kfac_unavailable",),
            )
            specs.extend(_split_qkv(spec, spec.flags) if kind == "attn_qkv" else [spec])
    return specs


def select_layers(specs: list[LayerSpec], pattern: str | None) -> list[LayerSpec]:
    """Layers whose name (or kind) matches the fnmatch glob; comma-separated globs are OR-ed."""
    if not pattern:
        return specs
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    return [s for s in specs if any(fnmatch.fnmatchcase(s.name, g) or s.kind == g for g in globs)]


def _is_hf_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf")


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, tuple):
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))  # type: ignore[call-overload]
