"""The peer tools, each called as its documentation tells users and in its best fair use.

See ../shared/peers.md. Every function here imports its peer lazily, so the module imports
without the ``bench`` extra; ``available()`` says which peers are installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.cases import Setup, default_dtype

PEERS = {
    "pyhessian": "pyhessian",
    "curvlinops": "curvlinops",
    "eigenthings": "hessian_eigenthings",
    "backpack": "backpack",
}


def available() -> dict[str, bool]:
    return {name: importlib.util.find_spec(mod) is not None for name, mod in PEERS.items()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "torch",
        "numpy",
        "scipy",
        "PyHessian",
        "curvlinops-for-pytorch",
        "hessian-eigenthings",
        "backpack-for-pytorch",
        "ray",
        "SQLAlchemy",
        "fastapi",
        "uvicorn",
        "psycopg",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _h_of(s: Setup, products: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(
        [(d * hx.reshape(d.shape)).sum() for d, hx in zip(s.directions, products, strict=True)]
    )


# ------------------------------------------------------------------------------ PyHessian
class _CountingHVP:
    """Wraps pyhessian.hessian's ``hessian_vector_product`` to count HVPs."""

    def __init__(self) -> None:
        # the package re-exports the class under the submodule's name: take the module itself
        ph = importlib.import_module("pyhessian.hessian")

        self.module = ph
        self.inner = ph.hessian_vector_product
        self.n = 0

    def __enter__(self) -> _CountingHVP:
        def counted(*a: Any, **kw: Any) -> Any:
            self.n += 1
            return self.inner(*a, **kw)

        self.module.hessian_vector_product = counted
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.hessian_vector_product = self.inner


def pyhessian_hk(s: Setup, *, freeze_others: bool) -> Callable[[], torch.Tensor]:
    """``hessian(model, criterion, data=(x, y), cuda=False)`` then one
    ``hessian_vector_product(gradsH, params, v)`` per direction (v zero outside W unless the
    other parameters are frozen: its best fair use)."""
    from pyhessian import hessian
    from pyhessian.utils import hessian_vector_product

    module, w = s.peer_model(freeze_others=freeze_others)
    crit = s.criterion()

    def run() -> torch.Tensor:
        module.zero_grad(set_to_none=True)  # its constructor accumulates into .grad
        comp = hessian(module, crit, data=(s.x, s.y), cuda=False)
        index = next(i for i, p in enumerate(comp.params) if p is w)
        out = []
        for d in s.directions:
            v = [torch.zeros_like(p) for p in comp.params]
            v[index] = d
            out.append(hessian_vector_product(comp.gradsH, comp.params, v)[index])
        module.zero_grad(set_to_none=True)
        return _h_of(s, out)

    return run


def pyhessian_eigs(s: Setup, k: int) -> Callable[[], dict[str, Any]]:
    """``hessian(...).eigenvalues(top_n=k)``: power iteration + deflation (tol 1e-3, maxIter
    100), other parameters frozen so it sees the layer block."""
    from pyhessian import hessian

    module, _ = s.peer_model(freeze_others=True)
    crit = s.criterion()

    def run() -> dict[str, Any]:
        module.zero_grad(set_to_none=True)
        with default_dtype(torch.float64), _CountingHVP() as c:
            comp = hessian(module, crit, data=(s.x, s.y), cuda=False)
            vals, _ = comp.eigenvalues(top_n=k)
        module.zero_grad(set_to_none=True)
        return {"eigenvalues": np.sort(np.asarray(vals))[::-1], "n_hvp": c.n}

    return run


# ----------------------------------------------------------------------------- curvlinops
def curvlinops_operator(s: Setup, *, check_deterministic: bool = True) -> Any:
    from curvlinops import HessianLinearOperator

    module, w = s.peer_model(freeze_others=False)
    return HessianLinearOperator(
        module, s.criterion(), [w], [(s.x, s.y)], check_deterministic=check_deterministic
    )


def curvlinops_hk(s: Setup, *, matrix: bool) -> Callable[[], torch.Tensor]:
    """``HessianLinearOperator(model, loss, [W], [(x, y)])``; ``H @ v`` per direction as the
    docs show (matrix=False) or ``H @ V`` on all K directions at once (its best use)."""
    flat = torch.stack([d.reshape(-1) for d in s.directions], dim=1)  # (N, K)

    def run() -> torch.Tensor:
        H = curvlinops_operator(s, check_deterministic=not matrix)
        if matrix:
            HV = H @ flat
            return (flat * HV).sum(0)
        return torch.stack([flat[:, k] @ (H @ flat[:, k]) for k in range(flat.shape[1])])

    return run


class _Counted:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn, self.n = fn, 0

    def __call__(self, x: Any) -> Any:
        self.n += 1 if np.ndim(x) == 1 or np.shape(x)[-1] == 1 else np.shape(x)[-1]
        return self.fn(x)


def curvlinops_eigsh(s: Setup, k: int, tol: float) -> Callable[[], dict[str, Any]]:
    """``eigsh(HessianLinearOperator(...).to_scipy(), k, which='LA', tol)``."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    def run() -> dict[str, Any]:
        H = curvlinops_operator(s).to_scipy()
        mv = _Counted(H.matvec)
        op = LinearOperator(H.shape, matvec=mv, dtype=np.float64)
        vals = eigsh(op, k=k, which="LA", tol=tol, return_eigenvectors=False)
        return {"eigenvalues": np.sort(vals)[::-1], "n_hvp": mv.n}

    return run


# -------------------------------------------------------------------- hessian-eigenthings
def eigenthings_operator(s: Setup) -> Any:
    from hessian_eigenthings import HessianOperator, supervised_loss

    module, w = s.peer_model(freeze_others=False)
    return HessianOperator(
        module,
        [(s.x, s.y)],
        supervised_loss(s.criterion()),
        param_filter=lambda _name, p: p is w,
    )


def eigenthings_hk(s: Setup) -> Callable[[], torch.Tensor]:
    """``HessianOperator(..., param_filter=W)``, one ``matvec`` per direction (each reruns
    the forward and the create_graph gradient: nothing is cached)."""

    def run() -> torch.Tensor:
        op = eigenthings_operator(s)
        return _h_of(s, [op.matvec(d.reshape(-1)) for d in s.directions])

    return run


def eigenthings_eigs(s: Setup, k: int, max_iter: int | None) -> Callable[[], dict[str, Any]]:
    """``lanczos(op, k=k, which='LA')`` (default 2k steps, or ``max_iter``)."""
    from hessian_eigenthings import lanczos

    def run() -> dict[str, Any]:
        op = eigenthings_operator(s)
        counted = _Counted(op.matvec)
        op.matvec = counted  # type: ignore[method-assign]
        kw = {} if max_iter is None else {"max_iter": max_iter, "reorthogonalize": True}
        res = lanczos(op, k=k, which="LA", seed=0, **kw)
        vals = res.eigenvalues.detach().cpu().numpy()
        return {"eigenvalues": np.sort(vals)[::-1], "n_hvp": counted.n}

    return run


# ------------------------------------------------------------------------------- BackPACK
def backpack_supported(s: Setup) -> str | None:
    """None when BackPACK's HMP can run this model, else the reason."""
    if s.loss == "lm":
        return "custom attention modules (and the LM loss view) have no HMP extension"
    if any(isinstance(m, nn.BatchNorm2d) for m in s.model.modules()):
        return "BatchNorm2d has no HMP extension"
    if not hasattr(s.model, "layers"):
        return "model is not expressible as nn.Sequential of supported modules"
    return None


def _sequential_mlp(s: Setup) -> tuple[nn.Sequential, nn.Parameter]:
    """The zoo MLP rewritten as nn.Sequential (same weights): what BackPACK needs."""
    src = s.model
    mods: list[nn.Module] = [nn.Flatten()]
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
    act = acts[getattr(src, "activation", "relu")]
    for layer in src.layers:  # type: ignore[union-attr]
        mods += [_copy_linear(layer), act()]
    mods.append(_copy_linear(src.head))  # type: ignore[arg-type]
    seq = nn.Sequential(*mods).to(torch.float64).eval()
    name_map = {f"layers.{i}.weight": f"{1 + 2 * i}.weight" for i in range(len(src.layers))}  # type: ignore[arg-type]
    name_map["head.weight"] = f"{len(mods) - 1}.weight"
    w = dict(seq.named_parameters())[name_map[s.spec.parameter]]
    return seq, w


def _copy_linear(layer: nn.Module) -> nn.Linear:
    assert isinstance(layer, nn.Linear)
    new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    new.load_state_dict(layer.state_dict())
    return new.to(torch.float64)


def backpack_hk(s: Setup) -> Callable[[], torch.Tensor]:
    """``with backpack(HMP()): loss.backward()`` then ``W.hmp(V)`` on all K directions."""
    from backpack import backpack, extend
    from backpack.extensions import HMP

    seq, w = _sequential_mlp(s)
    seq = extend(seq)
    crit = extend(s.criterion())
    Vs = torch.stack(s.directions)

    def run() -> torch.Tensor:
        with default_dtype(torch.float64):
            seq.zero_grad(set_to_none=True)
            loss = crit(seq(s.x.to(torch.float64)), s.y)
            with backpack(HMP()):
                loss.backward()
            HV = w.hmp(Vs)  # type: ignore[attr-defined]
        return (Vs * HV).flatten(1).sum(1)

    return run
