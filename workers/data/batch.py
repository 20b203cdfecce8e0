"""The ``Dataset`` record, the fixed measurement batch and the model/data fit check."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from api_schemas.enums import NAMED_LOSSES
from workers.curvature.measurement import draw_indices, set_train_mode
from workers.curvature.static_batch import batch_range_of, static_batch_of
from workers.errors import IntakeError

LOSSES = NAMED_LOSSES


@dataclass
class Dataset:
    """Inputs and targets, first dimension = examples."""

    inputs: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor | None = None
    name: str = ""
    sha256: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, indices: list[int] | torch.Tensor) -> Dataset:
        """The examples at ``indices`` (same name, sha256 and meta)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        mask = None if self.attention_mask is None else self.attention_mask[idx]
        return replace(
            self,
            inputs=self.inputs[idx],
            targets=self.targets[idx],
            attention_mask=mask,
            meta=dict(self.meta),
        )


def measurement_batch(
    ds: Dataset, batch_size: int = 2048, seed: int = 0
) -> tuple[Dataset, list[int]]:
    """B = min(batch_size, N) examples drawn without replacement by ``seed``, in sorted order.

    The indices come back too (and in ``meta["batch_indices"]``) as provenance.
    """
    n = len(ds)
    if n < 1 or batch_size < 1:
        raise IntakeError(f"cannot draw a batch of {batch_size} from {n} examples")
    indices = draw_indices(n, batch_size, seed)
    batch = ds.subset(indices)
    batch.meta.update(batch_indices=indices, batch_seed=seed, source_examples=n)
    return batch, indices


def check_fits(model: nn.Module, ds: Dataset, loss: str) -> None:
    """Run a forward on two examples; IntakeError if the data cannot feed ``model`` / ``loss``."""
    if loss not in LOSSES:
        raise IntakeError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
    arch = getattr(model, "curvprof_config", {}).get("arch", type(model).__name__)
    static = static_batch_of(model)
    if static is not None and len(ds) < static:
        raise IntakeError(
            f"the exported program has a static batch of {static} examples but the data holds "
            f"{len(ds)}: export with a dynamic batch or bring at least {static} examples"
        )
    bounds = batch_range_of(model)
    probe = static or max(2, bounds[0] if bounds else 2)
    if bounds and bounds[1] is not None:
        probe = min(probe, bounds[1])
    x, y = ds.inputs[:probe], ds.targets[:probe]
    what = f"data shape {tuple(ds.inputs.shape)} ({_dtype(x)})"
    kwargs: dict[str, torch.Tensor] = {}
    if getattr(model, "forward_takes_targets", False):
        kwargs["targets"] = y
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is not None:
        x = x.to(param.device)
        if x.is_floating_point():
            x = x.to(param.dtype)
    was_training = model.training
    set_train_mode(model, False)
    try:
        with torch.no_grad():
            out = model(x, **kwargs)
    except Exception as exc:  # any failure of the forward is a mismatch
        raise IntakeError(f"{what} does not fit model {arch}: {_first_line(exc)}") from None
    finally:
        set_train_mode(model, was_training)
    if not isinstance(out, torch.Tensor):
        raise IntakeError(f"model {arch} returns {type(out).__name__}, not a tensor")
    if loss == "model":
        _check_own_loss(model, x, y, ds.attention_mask, arch)
        return
    if loss == "mse":
        if y.is_floating_point() is False or tuple(out.shape) != tuple(y.shape):
            raise IntakeError(
                f"targets {tuple(y.shape)} ({_dtype(y)}) do not fit model {arch} output "
                f"{tuple(out.shape)} for mse (need floating targets of the output's shape)"
            )
        return
    want = 2 if loss == "cross_entropy" else 3
    if out.ndim != want or tuple(y.shape) != tuple(out.shape[:-1]):
        raise IntakeError(
            f"targets {tuple(y.shape)} do not fit model {arch} output {tuple(out.shape)} for "
            f"{loss} (need targets of shape {tuple(out.shape[:-1])})"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise IntakeError(f"{loss} needs integer class targets, got {_dtype(y)}")
    classes = int(out.shape[-1])
    valid = ds.targets[ds.targets != -100] if loss == "lm" else ds.targets
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        raise IntakeError(
            f"target class index out of range [0, {classes}) for model {arch}: "
            f"min {int(valid.min())}, max {int(valid.max())}"
        )


def _check_own_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, arch: str
) -> None:
    own = getattr(model, "own_loss", None)
    if not callable(own):
        raise IntakeError(
            f"loss 'model' needs a model that computes its own loss from labels (a Hugging "
            f"Face model); {arch} does not: name the loss instead"
        )
    try:
        with torch.no_grad():
            value = own(x, None if mask is None else mask[: x.shape[0]], y)
    except Exception as exc:
        raise IntakeError(
            f"model {arch} cannot compute its loss from these labels: {_first_line(exc)}"
        ) from None
    if value.numel() != 1 or not bool(torch.isfinite(value).all()):
        raise IntakeError(f"model {arch}: its loss from these labels is not a finite scalar")


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
