"""Measurement state (docs/engine.md): eval mode, one fixed batch, a mean-reduced loss, no TF32.

Every loss is written as a *sum* over examples (tokens for ``lm``) divided by a normaliser
fixed for the whole measurement batch, so that gradients and Hessian-vector products of
micro-batches add up exactly to those of the full batch:
L = (1/N) Σ_i ℓ_i with N = B (``cross_entropy``, ``mse``) or the number of predicted tokens
(``lm``). ``mse`` is ½‖f − y‖² per example, so its output Hessian is the identity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from api_schemas.enums import OUTPUT_LOSSES

LOSSES = OUTPUT_LOSSES
IGNORE_INDEX = -100
CUSTOM_LOSS = "custom"
MODEL_LOSS = "model"
"""The model's own loss from labels (a Hugging Face ``outputs.loss``): the model provides
``own_loss(inputs, attention_mask, targets)``. Its reduction is the model's (a mean over the
examples or tokens it counts), so the batch runs as one micro-batch."""
OutputLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A user's loss ``loss(outputs, targets)``: a scalar, the mean over the examples given."""


def own_loss_split_problem(loss: str, micro_batch_size: int | None, n_examples: int) -> str | None:
    """Why the model's own loss cannot run in these micro-batches, or None: its mean's
    reduction is the model's, so it is exact on the whole batch only."""
    if loss == MODEL_LOSS and micro_batch_size is not None and micro_batch_size < n_examples:
        return (
            "loss 'model' (the model's own mean) cannot be split into micro-batches exactly: "
            "leave the micro-batch size unset, or name the loss (lm, cross_entropy, mse)"
        )
    return None


def output_tensor(out: object) -> torch.Tensor:
    """The tensor a loss is taken on: logits if the model returns a structured output."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict):
        return output_tensor(next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return output_tensor(out[0])
    raise TypeError(f"model output of type {type(out).__name__} holds no tensor")


@dataclass
class Batch:
    """A measurement batch (or a micro-batch of it) with the loss normaliser of the full batch."""

    inputs: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor | None
    loss: str
    normaliser: float
    n_examples: int
    loss_fn: OutputLoss | None = None  # loss == "custom": the user's mean-reduced callable

    def split(self, micro_batch_size: int | None, *, limit: int | None = None) -> list[Batch]:
        """Consecutive micro-batches sharing the full batch's normaliser (the first ``limit``)."""
        size = self.inputs.shape[0]
        step = size if not micro_batch_size or micro_batch_size >= size else micro_batch_size
        starts = range(0, size, step)[:limit]
        return [
            Batch(
                self.inputs[i : i + step],
                self.targets[i : i + step],
                None if self.attention_mask is None else self.attention_mask[i : i + step],
                self.loss,
                self.normaliser,
                self.n_examples,
                self.loss_fn,
            )
            for i in starts
        ]

    def forward_kwargs(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Keyword inputs of the forward besides ``inputs``: the attention mask, and the
        targets for a model that reads them (``forward_takes_targets``: an encoder-decoder's
        decoder inputs are its shifted targets)."""
        kwargs: dict[str, torch.Tensor] = {}
        if self.attention_mask is not None:
            kwargs["attention_mask"] = self.attention_mask
        if getattr(model, "forward_takes_targets", False):
            kwargs["targets"] = self.targets
        return kwargs

    def forward(self, model: nn.Module) -> torch.Tensor:
        return output_tensor(model(self.inputs, **self.forward_kwargs(model)))

    def loss_of_output(
        self, out: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Σ_i ℓ_i / N on this micro-batch (targets default to the batch's own)."""
        y = self.targets if targets is None else targets
        if self.loss_fn is not None:  # a mean over this micro-batch, weighted to the full batch
            return self.loss_fn(out, y) * (out.shape[0] / self.normaliser)
        if self.loss == "cross_entropy":
            return F.cross_entropy(out, y, reduction="sum") / self.normaliser
        if self.loss == "mse":
            diff = out - y.reshape(out.shape)
            return 0.5 * (diff * diff).sum() / self.normaliser
        flat = out.reshape(-1, out.shape[-1])
        return (
            F.cross_entropy(flat, y.reshape(-1), reduction="sum", ignore_index=IGNORE_INDEX)
            / self.normaliser
        )

    def loss_value(self, model: nn.Module) -> torch.Tensor:
        """The micro-batch's share of the mean-reduced loss."""
        if self.loss == MODEL_LOSS:
            own: torch.Tensor = model.own_loss(  # type: ignore[operator]
                self.inputs, self.attention_mask, self.targets
            )
            return own
        return self.loss_of_output(self.forward(model))


def draw_indices(n: int, batch_size: int | None, seed: int) -> list[int]:
    """Sorted indices of the measurement batch: all n, or B = batch_size drawn without
    replacement by ``np.random.default_rng(seed)`` (recorded as provenance)."""
    if batch_size is None or batch_size >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=batch_size, replace=False))


def _lm_targets(targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return targets
    return targets.masked_fill(mask == 0, IGNORE_INDEX)


def make_batch(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    *,
    dtype: torch.dtype,
    attention_mask: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    mask_targets: bool = True,
    loss_fn: OutputLoss | None = None,
) -> Batch:
    """Cast floating inputs/targets to ``dtype`` and fix the loss normaliser for the batch.

    With ``loss_fn`` (``loss == "custom"``) the normaliser is B: a micro-batch of b examples
    contributes (b/B) · loss_fn(outputs, targets), which sums to the full batch's mean.
    """
    if loss_fn is not None:
        x, y = inputs.to(device), targets.to(device)
        x = x.to(dtype) if x.is_floating_point() else x
        y = y.to(dtype) if y.is_floating_point() else y
        mask = None if attention_mask is None else attention_mask.to(device)
        n = int(x.shape[0])
        return Batch(x, y, mask, CUSTOM_LOSS, float(n), n, loss_fn)
    if loss == MODEL_LOSS:
        x, y = inputs.to(device), targets.to(device)
        x = x.to(dtype) if x.is_floating_point() else x
        y = y.to(dtype) if y.is_floating_point() else y.long()
        mask = None if attention_mask is None else attention_mask.to(device)
        return Batch(x, y, mask, MODEL_LOSS, 1.0, int(x.shape[0]))
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    x = inputs.to(device)
    x = x.to(dtype) if x.is_floating_point() else x
    y = targets.to(device)
    if loss == "mse":
        y = y.to(dtype)
    elif y.is_floating_point():
        raise ValueError(f"loss {loss!r} needs integer class targets, got {y.dtype}")
    else:
        y = y.long()
    mask = None if attention_mask is None else attention_mask.to(device)
    n = int(x.shape[0])
    if loss == "lm":
        y = _lm_targets(y, mask if mask_targets else None)
        normaliser = float((y != IGNORE_INDEX).sum().item())
        if normaliser == 0:
            raise ValueError("lm loss: the batch has no target tokens")
    else:
        normaliser = float(n)
    return Batch(x, y, mask, loss, normaliser, n)


def set_train_mode(model: nn.Module, training: bool) -> None:
    """``model.train(training)``; programs from ``torch.export`` keep the mode they were
    exported in (they refuse ``eval()``), so export them from an eval-mode model."""
    with contextlib.suppress(NotImplementedError):
        model.train(training)


@contextlib.contextmanager
def measurement_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, TF32 off and highest float32 matmul precision, restored afterwards."""
    was_training = model.training
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    precision = torch.get_float32_matmul_precision()
    set_train_mode(model, False)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield model
    finally:
        set_train_mode(model, was_training)
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_float32_matmul_precision(precision)


@contextlib.contextmanager
def grad_only_for(model: nn.Module, params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Let only ``params`` require grad, so the graph is built for them alone."""
    wanted = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(id(p) in wanted)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def parameter_by_name(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


LossFn = Callable[[nn.Module], torch.Tensor]
