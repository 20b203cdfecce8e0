"""Other ways to get h_k for K directions, timed beside the engine's loop (docs/benchmarks.md).

    python -m bench.hk_variants cnn features.7 [--mode quick] [--repeats 5]

Each variant returns h_k = ⟨V_k, H V_k⟩ for the case-1 directions; the table gives the
median cost per direction in gradients of the layer (paired timing, as in case 1):
- loop: the engine's route, one double backward per direction through a reused graph;
- batched: all K through ``autograd.grad(..., is_grads_batched=True)``;
- output space: double backward from the layer's output z, with rank-1 dz_k = (a v_k) u_kᵀ
  (linear layers) or a jvp through the layer (others), h_k = ⟨dz_k, H_z dz_k⟩;
- fwd-over-rev: ``jvp(grad(L))`` one direction at a time, vmapped over all K, or in chunks of 5.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.func import functional_call, grad, jvp, vmap

from bench.cases import MODELS, Setup, make_setup
from bench.timing import paired
from workers.curvature.measurement import grad_only_for

Variant = Callable[[], torch.Tensor]


def loop(s: Setup) -> Variant:
    w = s.weight

    def run() -> torch.Tensor:
        with grad_only_for(s.model, [w]):
            (g,) = torch.autograd.grad(s.batch.loss_value(s.model), w, create_graph=True)
            return torch.stack(
                [
                    (torch.autograd.grad(g, w, grad_outputs=d, retain_graph=True)[0] * d).sum()
                    for d in s.directions
                ]
            )

    return run


def batched(s: Setup) -> Variant:
    w, D = s.weight, torch.stack(s.directions)

    def run() -> torch.Tensor:
        with grad_only_for(s.model, [w]):
            (g,) = torch.autograd.grad(s.batch.loss_value(s.model), w, create_graph=True)
            (HD,) = torch.autograd.grad(g, w, grad_outputs=D, is_grads_batched=True)
        return (HD * D).flatten(1).sum(1)

    return run


def output_space(s: Setup) -> Variant:
    module = s.model.get_submodule(s.spec.parameter.rsplit(".", 1)[0])
    w = s.weight.detach()

    def run() -> torch.Tensor:
        seen: dict[str, torch.Tensor] = {}

        def hook(_m: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor):
            seen["a"] = inputs[0].detach()
            seen["z"] = out.detach().requires_grad_(True)
            return seen["z"]

        handle = module.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                loss = s.batch.loss_value(s.model)
        finally:
            handle.remove()
        z, a = seen["z"], seen["a"]
        (gz,) = torch.autograd.grad(loss, z, create_graph=True)
        out = []
        for k, d in enumerate(s.directions):
            if isinstance(module, torch.nn.Linear):
                dz = (a @ s.V[:, k].to(a.dtype)).unsqueeze(-1) * s.U[:, k].to(a.dtype)
            else:
                _, dz = jvp(lambda v: functional_call(module, {"weight": v}, (a,)), (w,), (d,))
            (hz,) = torch.autograd.grad(gz, z, grad_outputs=dz, retain_graph=True)
            out.append((dz * hz).sum())
        return torch.stack(out)

    return run


def _hvp(s: Setup) -> Callable[[torch.Tensor], torch.Tensor]:
    name, w = s.spec.parameter, s.weight.detach()

    def loss_of(v: torch.Tensor) -> torch.Tensor:
        return s.batch.loss_value(lambda x: functional_call(s.model, {name: v}, (x,)))

    g = grad(loss_of)
    return lambda d: jvp(g, (w,), (d,))[1]


def fwd_over_rev(s: Setup, chunk: int | None) -> Variant:
    hvp, D = _hvp(s), torch.stack(s.directions)

    def run() -> torch.Tensor:
        if chunk is None:
            return torch.stack([(hvp(d) * d).sum() for d in D])
        parts = [vmap(hvp)(D[i : i + chunk]) for i in range(0, len(D), chunk)]
        return (torch.cat(parts) * D).flatten(1).sum(1)

    return run


def variants(s: Setup) -> dict[str, Variant]:
    K = len(s.directions)
    return {
        "loop (engine)": loop(s),
        "is_grads_batched": batched(s),
        "output-space double backward": output_space(s),
        "fwd-over-rev, one at a time": fwd_over_rev(s, None),
        f"fwd-over-rev, vmapped over {K}": fwd_over_rev(s, K),
        "fwd-over-rev, vmapped in chunks of 5": fwd_over_rev(s, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("layer", nargs="?")
    parser.add_argument("--mode", default="quick", choices=["quick", "full"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    s = make_setup(args.model, args.mode, layer=args.layer)
    K = len(s.directions)
    ref = loop(s)()
    print(f"{s.name} {s.spec.name} {tuple(s.spec.shape)} B={s.x.shape[0]} K={K}")
    for name, fn in variants(s).items():
        r = paired(fn, s.gradient, args.repeats)
        err = float(((r["out"] - ref).abs() / ref.abs().clamp_min(1e-300)).max())
        spread = f"{min(r['ratios']) / K:.2f}–{max(r['ratios']) / K:.2f}"
        print(f"  {name:40} {r['ratio'] / K:6.3f} per direction ({spread})  rel diff {err:.1e}")


if __name__ == "__main__":
    main()
