"""The cases of the peer benchmark (issue 6): trained models, measurement batches, setups.

Models are trained once with ``workers.train.train`` on the built-in data and cached under
``$CURVPROF_BENCH_CACHE`` (default ``~/.cache/curvprof-bench``). Every timed method runs in
float64 and is timed beside one plain gradient taken right before it (``bench.timing``).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.inventory import LayerSpec, layer_inventory
from workers.curvature.measurement import Batch, grad_only_for, make_batch

DTYPE = torch.float64
K = 20

# (arch, data, epochs, layer used for cases 1 and 2)
MODELS: dict[str, dict[str, Any]] = {
    "cnn": {"arch": "vgg", "data": "digits", "epochs": 4, "layer": "features.7"},
    "gpt": {"arch": "gpt", "data": "text", "epochs": 2, "layer": "blocks.0.mlp.fc1"},
    "mlp": {"arch": "mlp", "data": "digits", "epochs": 6, "layer": "layers.1"},
}
BATCH = {
    "quick": {"cnn": 256, "gpt": 16, "mlp": 512},
    "full": {"cnn": 1024, "gpt": 64, "mlp": 1437},
}


def cache_dir() -> Path:
    root = os.environ.get("CURVPROF_BENCH_CACHE") or Path.home() / ".cache" / "curvprof-bench"
    return Path(root)


def trained_model(name: str) -> nn.Module:
    """The trained zoo model (trained on first use, then loaded from the cache)."""
    from workers.intake.checkpoints import load_checkpoint
    from workers.train import train

    cfg = MODELS[name]
    out = cache_dir() / f"{name}-{cfg['arch']}-{cfg['data']}-e{cfg['epochs']}"
    if not (out / "model.safetensors").exists():
        train(cfg["arch"], cfg["data"], epochs=cfg["epochs"], out_dir=out, progress=False)
    return load_checkpoint(out).model.eval()


def data_for(name: str, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from workers.data import load_builtin, measurement_batch

    cfg = MODELS[name]
    ds = load_builtin(cfg["data"], split="train")
    batch, _ = measurement_batch(ds, batch_size=batch_size, seed=seed)
    return batch.inputs, batch.targets


class LMView(nn.Module):
    """(B, T, V) logits viewed as (B, V, T) so ``nn.CrossEntropyLoss`` (mean) takes (B, T)
    targets: the same mean over all B·T tokens as curvprof's ``lm`` loss (no mask)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).transpose(1, 2)


@dataclass
class Setup:
    """One model in float64 with its batch, the benchmarked layer and its K directions."""

    name: str
    model: nn.Module  # curvprof's copy: every parameter frozen (the engine unfreezes W)
    batch: Batch
    x: torch.Tensor
    y: torch.Tensor
    loss: str
    spec: LayerSpec
    specs: list[LayerSpec]
    U: torch.Tensor
    V: torch.Tensor
    directions: list[torch.Tensor] = field(default_factory=list)

    @property
    def weight(self) -> torch.Tensor:
        return dict(self.model.named_parameters())[self.spec.parameter]

    @property
    def dim(self) -> int:
        return self.spec.shape[0] * self.spec.shape[1]

    def layer_case(self) -> dict[str, Any]:
        """The head of a one-layer case's results: model, layer, its shape and the batch size."""
        return {
            "model": self.name,
            "layer": self.spec.name,
            "shape": list(self.spec.shape),
            "batch": int(self.x.shape[0]),
        }

    def peer_model(self, *, freeze_others: bool) -> tuple[nn.Module, nn.Parameter]:
        """A fresh copy for a peer: the module it sees (LMView for gpt) and its W.

        ``freeze_others=False`` is how peer docs call them (every parameter trainable)."""
        base = copy.deepcopy(self.model)
        for p in base.parameters():
            p.requires_grad_(not freeze_others)
        w = dict(base.named_parameters())[self.spec.parameter]
        w.requires_grad_(True)
        module = LMView(base) if self.loss == "lm" else base
        return module.eval(), w

    def criterion(self) -> nn.Module:
        return nn.CrossEntropyLoss(reduction="mean")

    def gradient(self) -> None:
        """One plain gradient of the benchmarked layer (the timing reference)."""
        w = self.weight
        with grad_only_for(self.model, [w]):
            torch.autograd.grad(self.batch.loss_value(self.model), w)

    def full_gradient(self) -> None:
        """One plain gradient of every analysable matrix (the reference for whole profiles)."""
        params = dict(self.model.named_parameters())
        ws = [params[n] for n in sorted({s.parameter for s in self.specs})]
        with grad_only_for(self.model, ws):
            torch.autograd.grad(self.batch.loss_value(self.model), ws)


def make_setup(
    name: str, mode: str, *, layer: str | None = None, batch_size: int | None = None
) -> Setup:
    """``name``'s trained model in float64 on ``batch_size`` examples (default: the mode's
    ``BATCH``), its benchmarked layer and the layer's K gradient singular directions."""
    model = trained_model(name).to(DTYPE).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loss = getattr(model, "default_loss", "cross_entropy")
    x, y = data_for(name, batch_size or BATCH[mode][name])
    batch = make_batch(x, y, loss, dtype=DTYPE)
    specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
    spec = next(s for s in specs if s.name == (layer or MODELS[name]["layer"]))
    grads, _ = layer_gradients(model, [batch], [spec])
    svd = gradient_svd(grads[spec.name], K)
    dirs = [spec.embed(torch.outer(svd.U[:, k], svd.V[:, k])) for k in range(svd.k)]
    return Setup(
        name, model, batch, batch.inputs, batch.targets, loss, spec, specs, svd.U, svd.V, dirs
    )


def rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max_k |a_k − ref_k| / max(|ref_k|, 1e-12·max|ref|)."""
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    ref = torch.as_tensor(ref, dtype=torch.float64).reshape(-1)
    floor = 1e-12 * float(ref.abs().max()) if ref.numel() else 0.0
    den = ref.abs().clamp_min(max(floor, 1e-300))
    return float(((a - ref).abs() / den).max()) if ref.numel() else float("nan")


class default_dtype:
    """Temporarily set torch's default dtype (PyHessian and BackPACK draw vectors with it)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self.saved)
