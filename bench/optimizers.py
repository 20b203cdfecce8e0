"""Spectral Newton vs AdamW vs the α = 1 polar update on the zoo ``vgg`` CNN on digits (issue 7).

Protocol: for every optimizer, the learning rate is picked from a 3-point grid by the lowest
validation loss (accuracy saturates near 98 % for all of them) after training seed 0 on 80 % of
the training split (stratified, seed 0) and evaluating on the other 20 %; then seeds 0, 1, 2
train on the whole training split at that rate and are evaluated on the test split. Every run
uses the same epochs, batch 128, a cosine learning-rate decay to 0 and one thread. The
measured-profile variants use α (and, in ``newton`` mode, κ) from ``profile_model`` on a VGG
trained 3 epochs with AdamW (seed 0).

    python -m bench.optimizers [--quick] [--out DIR] [--epochs N] [--seeds N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from api_schemas.profile import Profile
from workers.curvature import profile_model
from workers.data import Dataset, load_builtin
from workers.optim import SpectralNewton
from workers.zoo import build_model

Factory = Callable[[nn.Module, float, Profile | None], torch.optim.Optimizer]
BATCH = 128
WEIGHT_DECAY = 0.01
AUX_ADAMW_LR = 3e-3
"""AdamW rate of the parameters SN does not own (head, BN gains, biases); not tuned."""


def _adamw(model: nn.Module, lr: float, _: Profile | None) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)


def _sn(**options: Any) -> Factory:
    """SN with by-kind α (conv 2.0, hidden linear 2.0 on the VGG) and ``options``."""

    def make(model: nn.Module, lr: float, _: Profile | None) -> torch.optim.Optimizer:
        return SpectralNewton.for_model(
            model, lr, adamw_lr=AUX_ADAMW_LR, weight_decay=WEIGHT_DECAY, **options
        )

    return make


def _polar(model: nn.Module, lr: float, _: Profile | None) -> torch.optim.Optimizer:
    """α = 1 with d = 0: ΔW = U Vᵀ exactly (Muon's target, without NS5's error)."""
    ones = {name: 1.0 for name, _ in model.named_parameters()}
    return SpectralNewton.for_model(
        model, lr, adamw_lr=AUX_ADAMW_LR, weight_decay=WEIGHT_DECAY, alphas=ones, damping=0.0
    )


def _from_profile(mode: str) -> Factory:
    """SN with α (and κ in ``newton`` mode) from the measured profile."""

    def make(model: nn.Module, lr: float, profile: Profile | None) -> torch.optim.Optimizer:
        assert profile is not None
        return SpectralNewton.from_profile(
            model, profile, lr, adamw_lr=AUX_ADAMW_LR, weight_decay=WEIGHT_DECAY, mode=mode
        )

    return make


@dataclass(frozen=True)
class Contender:
    """One optimizer configuration of the comparison and its learning-rate grid."""

    name: str
    label: str
    factory: Factory
    grid: tuple[float, ...]
    needs_profile: bool = False


CONTENDERS = (
    Contender("adamw", "AdamW", _adamw, (3e-4, 1e-3, 3e-3)),
    Contender("sn_paper", "SN α=2, paper mode (d=0.1)", _sn(), (0.01, 0.03, 0.1)),
    Contender("sn_normalized", "SN α=2, normalized", _sn(mode="normalized"), (0.01, 0.03, 0.1)),
    Contender("sn_polar", "α=1 exact polar (UVᵀ)", _polar, (0.003, 0.01, 0.03)),
    Contender(
        "sn_profile_normalized",
        "SN measured α, normalized",
        _from_profile("normalized"),
        (0.01, 0.03, 0.1),
        True,
    ),
    Contender(
        "sn_profile_newton",
        "SN measured α and κ, newton",
        _from_profile("newton"),
        (0.01, 0.03, 0.1),
        True,
    ),
)


@dataclass
class Run:
    """One training run: per-epoch curves and final metrics on the evaluation set."""

    name: str
    lr: float
    seed: int
    epochs: int
    train_loss: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    final_train_loss: float = math.nan
    wall_seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        """Final evaluation accuracy (NaN if the run diverged)."""
        return self.eval_accuracy[-1] if self.eval_accuracy else math.nan

    @property
    def loss(self) -> float:
        """Final evaluation loss."""
        return self.eval_loss[-1] if self.eval_loss else math.nan


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode over the whole set."""
    model.eval()
    out = model(ds.inputs)
    loss = float(F.cross_entropy(out, ds.targets))
    return loss, float((out.argmax(1) == ds.targets).float().mean())


def train_run(
    c: Contender,
    lr: float,
    seed: int,
    epochs: int,
    train: Dataset,
    held_out: Dataset,
    profile: Profile | None,
) -> Run:
    """Train a fresh VGG (seed) for ``epochs`` with cosine decay η_t = η·½(1 + cos(πt/T))."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model({"arch": "vgg"})
    opt = c.factory(model, lr, profile)
    total = epochs * math.ceil(len(train) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
    )
    gen = torch.Generator().manual_seed(seed)
    run = Run(c.name, lr, seed, epochs)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        losses = []
        for lo in range(0, len(train), BATCH):
            idx = order[lo : lo + BATCH]
            loss = F.cross_entropy(model(train.inputs[idx]), train.targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        run.train_loss.append(statistics.fmean(losses))
        ev_loss, ev_acc = evaluate(model, held_out)
        run.eval_loss.append(ev_loss)
        run.eval_accuracy.append(ev_acc)
        if not math.isfinite(run.train_loss[-1]):
            break
    run.final_train_loss = evaluate(model, train)[0]
    run.wall_seconds = round(time.perf_counter() - start, 2)
    return run


def split_validation(train: Dataset, fraction: float = 0.2) -> tuple[Dataset, Dataset]:
    """Stratified (seed 0) split of the training split into (fit, validation)."""
    from sklearn.model_selection import train_test_split

    idx = list(range(len(train)))
    fit, val = train_test_split(
        idx, test_size=fraction, random_state=0, stratify=train.targets.numpy()
    )
    return train.subset(sorted(fit)), train.subset(sorted(val))


def measure_profile(train: Dataset, epochs: int, batch: int) -> Profile:
    """α per layer of a VGG trained ``epochs`` with AdamW (seed 0), measured on ``batch``
    training examples (exact h_k only: no Lanczos, no Kronecker variants)."""
    adamw = CONTENDERS[0]
    torch.manual_seed(0)
    model = build_model({"arch": "vgg"})
    opt = adamw.factory(model, 3e-3, None)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for lo in range(0, len(train), BATCH):
            idx = order[lo : lo + BATCH]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(train.inputs[idx]), train.targets[idx]).backward()
            opt.step()
    return profile_model(
        model, train.inputs, train.targets, batch_size=batch, lanczos_steps=0, variants=()
    )


def summarize(runs: list[Run]) -> dict[str, float]:
    """Mean and sample sd over seeds of test accuracy, test loss and final train loss."""

    def ms(xs: list[float]) -> tuple[float, float]:
        return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

    acc, acc_sd = ms([r.accuracy for r in runs])
    loss, loss_sd = ms([r.loss for r in runs])
    tr, tr_sd = ms([r.final_train_loss for r in runs])
    return {
        "test_accuracy": acc,
        "test_accuracy_sd": acc_sd,
        "test_loss": loss,
        "test_loss_sd": loss_sd,
        "train_loss": tr,
        "train_loss_sd": tr_sd,
        "wall_seconds": statistics.fmean([r.wall_seconds for r in runs]),
    }


def plot_curves(finals: dict[str, list[Run]], labels: dict[str, str], path: Path) -> None:
    """Mean over seeds (line) and min–max over seeds (band) of the per-epoch training loss and
    test loss, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, runs in finals.items():
        for ax, key in zip(axes, ("train_loss", "eval_loss"), strict=True):
            curves = np.array([getattr(r, key) for r in runs], dtype=float)
            x = np.arange(1, curves.shape[1] + 1)
            (line,) = ax.plot(x, curves.mean(0), label=f"{labels[name]} (η={runs[0].lr:g})")
            ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.15, lw=0,
                            color=line.get_color())  # fmt: skip
    for ax, title in zip(axes, ("training loss (epoch mean)", "test loss"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"VGG on digits: {title}\nmean over seeds, band = min–max", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _machine() -> str:
    """CPU model and count, e.g. ``AMD EPYC (2 CPUs, x86_64 Linux)``."""
    import os

    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} CPUs, {platform.machine()} {platform.system()})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Tune, run the seeds, write ``optimizers.json`` and ``optimizers_loss.png`` to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test version (< 1 min)")
    ap.add_argument("--out", type=Path, default=None, help="default docs/img (quick: /tmp/…)")
    ap.add_argument("--epochs", type=int, default=None, help="default 15 (quick: 2)")
    ap.add_argument("--seeds", type=int, default=None, help="default 3 (quick: 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    quick = bool(args.quick)
    epochs = args.epochs or (2 if quick else 15)
    seeds = args.seeds or (2 if quick else 3)
    out: Path = args.out or Path("/tmp/curvprof-bench-optimizers" if quick else "docs/img")
    start = time.perf_counter()
    train, test = load_builtin("digits", split="train"), load_builtin("digits", split="test")
    fit, val = split_validation(train)
    contenders: tuple[Contender, ...] = CONTENDERS
    if quick:
        contenders = tuple(
            Contender(c.name, c.label, c.factory, c.grid[1:2], c.needs_profile)
            for c in CONTENDERS
            if c.name in ("adamw", "sn_paper", "sn_polar", "sn_profile_newton")
        )
    t0 = time.perf_counter()
    profile = measure_profile(train, 1 if quick else 3, 64 if quick else 256)
    profile_seconds = time.perf_counter() - t0
    (out / "optimizers_profile.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "optimizers_profile.json").write_text(profile.model_dump_json(indent=1))
    print(f"profile: {profile_seconds:.1f} s; α by layer:", flush=True)
    for ly in profile.layers:
        print(f"  {ly.name:<14} {ly.kind:<7} α={ly.alpha}  log κ={ly.alpha_intercept}")
    grid: dict[str, list[dict[str, float]]] = {}
    best: dict[str, float] = {}
    for c in contenders:
        prof = profile if c.needs_profile else None
        trials = [train_run(c, lr, 0, epochs, fit, val, prof) for lr in c.grid]
        grid[c.name] = [
            {"lr": r.lr, "val_accuracy": r.accuracy, "val_loss": r.loss} for r in trials
        ]
        ok = [r for r in trials if math.isfinite(r.loss)] or trials
        best[c.name] = min(ok, key=lambda r: (r.loss, -r.accuracy)).lr
        print(f"grid {c.name}: {grid[c.name]} -> lr {best[c.name]:g}", flush=True)
    finals: dict[str, list[Run]] = {}
    for c in contenders:
        prof = profile if c.needs_profile else None
        finals[c.name] = [
            train_run(c, best[c.name], s, epochs, train, test, prof) for s in range(seeds)
        ]
    summary = {name: summarize(runs) for name, runs in finals.items()}
    labels = {c.name: c.label for c in contenders}
    plot_curves(finals, labels, out / "optimizers_loss.png")
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": quick,
        "epochs": epochs,
        "seeds": seeds,
        "batch_size": BATCH,
        "n_fit": len(fit),
        "n_val": len(val),
        "n_train": len(train),
        "n_test": len(test),
        "profile_seconds": round(profile_seconds, 1),
        "profile_alpha": {ly.parameter: ly.alpha for ly in profile.layers},
        "profile_log_kappa": {ly.parameter: ly.alpha_intercept for ly in profile.layers},
        "grid": grid,
        "best_lr": best,
        "best_at_grid_edge": {
            c.name: len(c.grid) > 1 and best[c.name] in (c.grid[0], c.grid[-1]) for c in contenders
        },
        "summary": summary,
        "runs": {n: [asdict(r) for r in runs] for n, runs in finals.items()},
        "labels": labels,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    (out / "optimizers.json").write_text(json.dumps(result, indent=1))
    head = f"{'optimizer':<32} {'lr':>7}  {'test acc (%)':>14}  {'test loss':>16}"
    print(f"\n{head}  {'train loss':>18}")
    for name, s in summary.items():
        print(
            f"{labels[name]:<32} {best[name]:>7g}  "
            f"{100 * s['test_accuracy']:6.2f} ± {100 * s['test_accuracy_sd']:4.2f}  "
            f"{s['test_loss']:.4f} ± {s['test_loss_sd']:.4f}  "
            f"{s['train_loss']:.2e} ± {s['train_loss_sd']:.1e}"
        )
    print(f"total {result['total_seconds']} s; wrote {out}/optimizers.json, optimizers_loss.png")
    return result


if __name__ == "__main__":
    main()
