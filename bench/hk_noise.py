"""The float32 noise floor of h_k against the true float32 error, on every route.

    OPENBLAS_NUM_THREADS=1 python -m bench.hk_noise [--out FILE]

For each model (random weights, float32) and layer, with K = 20 directions of the layer
gradient: h_k by the engine's route in float32 on the whole batch, the same route in float64
on a float64 copy (same weights, data, directions); the true error is
max_k |h_k(float32) − h_k(float64)|. Beside it: the bound ε of ``noise_floor.py`` (two
precisions on a sub-batch), its raw max_k ε_k, and M's asymmetry median |M_jk − M_kj| (the
estimator it replaced). Ratios above 1 bound the true error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.hk_routes import SmallCNN
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.hvp import BlockHessian, compressed_diagnostics
from workers.curvature.inventory import layer_inventory
from workers.curvature.measurement import make_batch
from workers.curvature.noise_floor import cast_model
from workers.curvature.routes import routed_curvature, run_route
from workers.zoo import build_model


@dataclass(frozen=True)
class NoiseRow:
    """One layer and route: the true float32 error of h and its estimates."""

    model: str
    layer: str
    route: str
    diagnostics: bool
    true_error: float  # max_k |h_k(float32) − h_k(float64)|
    eps: float  # the bound of noise_floor.py
    raw: float  # max_k ε_k on the sub-batch, before the growth and safety factors
    asymmetry: float  # median_{j<k} |M_jk − M_kj| (the old ε_HVP)
    h_max: float


def noise_rows(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    *,
    top_k: int = 20,
    layers: Callable[[list[Any]], list[Any]] = lambda specs: specs,
) -> list[NoiseRow]:
    """Every (layer, diagnostics) of ``model`` (float32, frozen, eval) as a ``NoiseRow``."""
    m32 = model.float().eval()
    for p in m32.parameters():
        p.requires_grad_(False)
    m64 = cast_model(m32, torch.float64)
    b32 = make_batch(x, y, loss, dtype=torch.float32)
    b64 = make_batch(x, y, loss, dtype=torch.float64)
    specs, _ = layer_inventory(m64, b64.split(1, limit=1)[0].forward)
    rows = []
    for spec in layers(specs):
        grads, _ = layer_gradients(m64, [b64], [spec])
        svd = gradient_svd(grads[spec.name], top_k)
        for diagnostics in (False, True):
            block = BlockHessian(m32, [b32], spec.parameter)
            r = routed_curvature(
                m32, [b32], spec, svd.U, svd.V, block=block, diagnostics=diagnostics
            )
            block.release()
            ref = run_route(r.route, m64, [b64], spec, svd.U, svd.V, diagnostics=diagnostics)
            assert ref is not None and r.M is not None and r.rounding is not None
            rows.append(NoiseRow(
                name, spec.name, r.route, diagnostics,
                true_error=float((r.h - ref.h).abs().max()),
                eps=r.rounding.eps,
                raw=float(r.rounding.per_direction.max()),
                asymmetry=compressed_diagnostics(r.M.cpu(), r.h, None).hvp_noise,
                h_max=float(ref.h.abs().max()),
            ))  # fmt: skip
    return rows


def cases() -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor, str]]:
    torch.manual_seed(0)
    mlp = nn.Sequential()
    mlp.fc1, mlp.act1 = nn.Linear(784, 256), nn.ReLU()
    mlp.fc2, mlp.act2 = nn.Linear(256, 256), nn.ReLU()
    mlp.head = nn.Linear(256, 10)
    tanh = nn.Sequential(nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                         nn.Linear(128, 10))  # fmt: skip
    tokens = torch.randint(0, 96, (32, 33))
    return [
        ("relu_mlp", mlp, torch.randn(64, 784), torch.randint(0, 10, (64,)), "cross_entropy"),
        ("tanh_mlp", tanh, torch.randn(64, 784), torch.randint(0, 10, (64,)), "cross_entropy"),
        ("cnn", SmallCNN(), torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)),
         "cross_entropy"),
        ("gpt", build_model({"arch": "gpt"}), tokens[:, :-1], tokens[:, 1:], "lm"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[NoiseRow] = []
    print("| model | layer | route | diag. | true error | ε ÷ true | raw ÷ true | asym. ÷ true |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model, x, y, loss in cases():
        pick = (lambda s: s[::3]) if name == "gpt" else (lambda s: s)
        for r in noise_rows(name, model, x, y, loss, layers=pick):
            rows.append(r)
            t = r.true_error
            print(f"| {r.model} | {r.layer} | {r.route} | {'yes' if r.diagnostics else 'no'} | "
                  f"{t:.2e} | {r.eps / t:.2f} | {r.raw / t:.2f} | {r.asymmetry / t:.1e} |",
                  flush=True)  # fmt: skip
    if args.out:
        with open(args.out, "w") as fh:
            json.dump([r.__dict__ for r in rows], fh, indent=1)


if __name__ == "__main__":
    main()
