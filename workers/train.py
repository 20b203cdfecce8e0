"""Train a zoo model on built-in data on CPU (AdamW) and write a checkpoint directory.

The directory holds ``config.json``, ``model.safetensors`` and ``metrics.json``; it is written
to a temporary sibling and renamed into place, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from workers.data import Dataset, load_builtin
from workers.errors import IntakeError
from workers.intake.checkpoints import save_checkpoint
from workers.zoo import ARCHS, build_model

DATA_FOR = {
    "mlp": ("digits", "synthetic"),
    "vgg": ("digits",),
    "resnet": ("digits",),
    "vit": ("digits",),
    "gpt": ("text",),
}
DEFAULT_LR = {"mlp": 3e-3, "vgg": 3e-3, "resnet": 3e-3, "vit": 3e-3, "gpt": 3e-3}
TEXT_STEPS_PER_EPOCH = 60
TEXT_BATCH = 32
EVAL_CAP = 1024
TEXT_EVAL_CAP = 256


def train(
    arch: str,
    data: str,
    *,
    epochs: int,
    out_dir: Path,
    seed: int = 0,
    lr: float | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    **config_overrides: Any,
) -> dict[str, Any]:
    """Train ``arch`` on built-in ``data`` and write the checkpoint to ``out_dir``.

    ``batch_size`` defaults to 128 examples (32 windows of ``text``); ``max_steps`` caps the
    optimiser steps per epoch (default: no cap, 60 for ``text``);
    ``config_overrides`` go to the model config. Returns the metrics (also in metrics.json).
    """
    if arch not in ARCHS:
        raise IntakeError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if data not in DATA_FOR[arch]:
        raise IntakeError(f"arch {arch!r} trains on {' or '.join(DATA_FOR[arch])}, not {data!r}")
    if batch_size is None:
        batch_size = TEXT_BATCH if data == "text" else 128
    if epochs < 1 or batch_size < 1:
        raise IntakeError(f"epochs ({epochs}) and batch_size ({batch_size}) must be positive")
    start = time.perf_counter()
    torch.manual_seed(seed)
    config: dict[str, Any] = {"arch": arch, **config_overrides}
    cap: int | None = max_steps
    if data == "text":
        seq_len = int(config.get("block_size", 64))
        train_ds, test_ds = (
            load_builtin("text", seed=seed, split=s, seq_len=seq_len) for s in ("train", "test")
        )
        config.setdefault("vocab_size", train_ds.meta["vocab_size"])
        config.setdefault("block_size", seq_len)
        cap = TEXT_STEPS_PER_EPOCH if max_steps is None else max_steps
    else:
        train_ds, test_ds = (load_builtin(data, seed=seed, split=s) for s in ("train", "test"))
        if data == "synthetic":
            config.setdefault("in_features", int(train_ds.inputs.shape[1]))
            config.setdefault("classes", int(train_ds.meta["classes"]))
    model = build_model(config)
    lr = DEFAULT_LR[arch] if lr is None else lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    n = len(train_ds)
    for _ in tqdm(range(epochs), desc=f"train {arch}", disable=not progress, unit="epoch"):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i, lo in enumerate(range(0, n, batch_size)):
            if cap is not None and i >= cap:
                break
            idx = order[lo : lo + batch_size]
            loss = _loss(model(train_ds.inputs[idx]), train_ds.targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    eval_cap = TEXT_EVAL_CAP if data == "text" else EVAL_CAP
    train_loss, train_acc = evaluate(model, train_ds, cap=eval_cap)
    test_loss, test_acc = evaluate(model, test_ds, cap=eval_cap)
    metrics: dict[str, Any] = {
        "arch": arch,
        "data": data,
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "steps": steps,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "n_train": n,
        "n_test": len(test_ds),
        "data_sha256": train_ds.sha256,
        "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - start, 3),
    }
    _write_atomically(model, metrics, Path(out_dir))
    return {**metrics, "out_dir": str(out_dir)}


def _loss(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def evaluate(
    model: nn.Module, ds: Dataset, *, cap: int = EVAL_CAP, batch_size: int = 256
) -> tuple[float, float]:
    """Mean loss and accuracy (per token for LMs) in eval mode on up to ``cap`` evenly spaced
    examples."""
    model.eval()
    n = min(len(ds), cap)
    idx = torch.linspace(0, len(ds) - 1, n).round().long() if n < len(ds) else torch.arange(n)
    total_loss, correct, count = 0.0, 0, 0
    for lo in range(0, n, batch_size):
        part = idx[lo : lo + batch_size]
        out, y = model(ds.inputs[part]), ds.targets[part]
        total_loss += float(_loss(out, y)) * y.numel()
        correct += int((out.argmax(dim=-1) == y).sum())
        count += y.numel()
    return total_loss / count, correct / count


def _write_atomically(model: nn.Module, metrics: dict[str, Any], out_dir: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex}"
    try:
        save_checkpoint(model, tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
