"""Cost of the engine's h_k and Lanczos steps, as ratios to one gradient (issue 2's benchmark).

Each repeat times one plain gradient of the layer right before the method and reports the
median of the ratios (this machine's speed drifts). The floor is the marginal cost of one
more direction back-propagated through a reused ``create_graph=True`` gradient, measured in
the same run with a bare loop; the engine's h_k should sit on it.

    python -m bench.engine_cost [--repeats 5] [--dtype float64] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.hvp import BlockHessian, directional_curvature, layer_matvec
from workers.curvature.inventory import LayerSpec, layer_inventory
from workers.curvature.lanczos import lanczos
from workers.curvature.measurement import grad_only_for, make_batch, measurement_mode


class Block(nn.Module):
    """A pre-norm transformer block with explicit attention, mean-pooled to a classifier."""

    def __init__(self, d: int = 64, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (
            p(h).view(b, t, self.heads, -1).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.out_proj((att @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 16, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], torch.Tensor]
    layer: str


CASES = [
    Case("cnn conv (B=512, 8x8)", cnn, lambda g: torch.randn(512, 1, 8, 8, generator=g), "2"),
    Case("mlp (B=2048)", mlp, lambda g: torch.randn(2048, 64, generator=g), "2"),
    Case(
        "transformer up-proj (B=256, T=16)",
        Block,
        lambda g: torch.randn(256, 16, 64, generator=g),
        "fc1",
    ),
]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(
    case: Case, *, repeats: int, top_k: int, steps: int, dtype: torch.dtype
) -> dict[str, float | str]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = case.build().to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    x = case.inputs(g)
    y = torch.randint(0, 10, (x.shape[0],), generator=g)
    batch = make_batch(x, y, "cross_entropy", dtype=dtype)
    specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
    spec: LayerSpec = next(s for s in specs if s.name == case.layer)
    weight = dict(model.named_parameters())[spec.parameter]
    ratios: dict[str, list[float]] = {
        "setup": [],
        "floor": [],
        "h_k": [],
        "lanczos": [],
        "k20_total": [],
    }
    with measurement_mode(model):
        grads, _ = layer_gradients(model, [batch], [spec])
        svd = gradient_svd(grads[spec.name], top_k)
        dirs = [spec.embed(torch.outer(svd.U[:, k], svd.V[:, k]).to(dtype)) for k in range(svd.k)]

        def gradient() -> None:
            with grad_only_for(model, [weight]):
                torch.autograd.grad(batch.loss_value(model), weight)

        def floor() -> tuple[float, float]:
            with grad_only_for(model, [weight]):
                t0 = time.perf_counter()
                (gr,) = torch.autograd.grad(batch.loss_value(model), weight, create_graph=True)
                t1 = time.perf_counter()
                for d in dirs:
                    torch.autograd.grad(gr, weight, grad_outputs=d, retain_graph=True)
                t2 = time.perf_counter()
            return t1 - t0, (t2 - t1) / len(dirs)

        def engine_hk() -> float:
            block = BlockHessian(model, [batch], spec.parameter)
            return _timed(lambda: directional_curvature(block, spec, svd.U, svd.V))

        def engine_lanczos() -> float:
            block = BlockHessian(model, [batch], spec.parameter)
            dim, matvec = layer_matvec(block, spec)
            return _timed(lambda: lanczos(matvec, dim, steps=steps, k=min(top_k, steps)))  # type: ignore[arg-type]

        for warm_up in (gradient, floor, engine_hk, engine_lanczos):  # page faults, allocator
            warm_up()
        for _ in range(repeats):
            t_grad = _timed(gradient)
            setup, per_dir = floor()
            ratios["setup"].append(setup / t_grad)
            ratios["floor"].append(per_dir / t_grad)
            t_grad = _timed(gradient)
            t_hk = engine_hk()
            ratios["h_k"].append(t_hk / svd.k / t_grad)
            ratios["k20_total"].append(t_hk / t_grad)
            t_grad = _timed(gradient)
            ratios["lanczos"].append(engine_lanczos() / t_grad)
    out: dict[str, float | str] = {
        "case": case.name,
        "layer": f"{spec.name} {spec.shape}",
        "K": svd.k,
    }
    out.update({k: statistics.median(v) for k, v in ratios.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args()
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    rows = [
        measure(c, repeats=args.repeats, top_k=args.top_k, steps=args.steps, dtype=dtype)
        for c in CASES
    ]
    print(
        f"cost in gradients of the same layer (median of {args.repeats} paired repeats, "
        f"{args.dtype}, {torch.get_num_threads()} threads)"
    )
    print(
        f"{'case':36} {'layer':22} {'K':>3} {'floor/dir':>9} {'h_k/dir':>8} {'setup':>6} "
        f"{'K dirs+setup':>12} {'Lanczos':>8}"
    )
    for r in rows:
        print(
            f"{r['case']:36} {r['layer']:22} {r['K']:>3} {r['floor']:>9.3f} {r['h_k']:>8.3f} "
            f"{r['setup']:>6.2f} {r['k20_total']:>12.2f} {r['lanczos']:>8.2f}"
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"dtype": args.dtype, "repeats": args.repeats, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
