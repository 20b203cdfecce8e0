"""A measurement set held as an iterable of batches (a ``DataLoader``), as one batch.

The batches are concatenated in the order the loader yields them and the engine then runs
them as micro-batches of the loader's batch size: gradients and Hessian-vector products of
micro-batches add up exactly to the whole set's (docs/engine.md), so the result is the
profile of the union, not an average of per-batch profiles. A batch is ``(inputs, targets)``,
``(inputs, targets, attention_mask)`` or a mapping with ``input_ids``/``pixel_values``/
``inputs``, ``labels``/``targets`` and optionally ``attention_mask``.

The dataset indices are recorded when the loader's sampler knows them without drawing:
a sequential sampler (0..N-1 in order) or a sampler over a fixed subset (``indices``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

_INPUT_KEYS = ("input_ids", "pixel_values", "inputs", "x")
_TARGET_KEYS = ("labels", "targets", "y")


@dataclass
class LoadedBatches:
    inputs: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor | None
    batch_size: int  # the first batch's size: the micro-batch size
    indices: list[int] | None


def collect_batches(loader: Iterable[Any]) -> LoadedBatches:
    """Concatenate every batch of ``loader`` (ValueError for an empty or ragged loader)."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for batch in loader:
        x, y, mask = _unpack(batch)
        xs.append(x)
        ys.append(y)
        if mask is not None:
            masks.append(mask)
    if not xs:
        raise ValueError("the data loader yielded no batch")
    if masks and len(masks) != len(xs):
        raise ValueError("some batches have an attention_mask and some do not")
    inputs, targets = torch.cat(xs), torch.cat(ys)
    return LoadedBatches(
        inputs,
        targets,
        torch.cat(masks) if masks else None,
        int(xs[0].shape[0]),
        _known_indices(loader, int(inputs.shape[0])),
    )


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in _INPUT_KEYS if k in batch), None)
        y = next((batch[k] for k in _TARGET_KEYS if k in batch), None)
        if x is None or y is None:
            raise ValueError(f"a batch mapping needs inputs and labels, got keys {sorted(batch)}")
        return x, y, batch.get("attention_mask")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    raise ValueError(
        "each batch must be (inputs, targets), (inputs, targets, attention_mask) or a mapping"
    )


def _known_indices(loader: Any, n: int) -> list[int] | None:
    from torch.utils.data import SequentialSampler

    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, SequentialSampler):
        indices = list(range(len(sampler)))
    elif sampler is not None and hasattr(sampler, "indices"):
        indices = sorted(int(i) for i in sampler.indices)
    else:
        return None
    drop_last = bool(getattr(loader, "drop_last", False))
    if drop_last or len(indices) != n:  # a dropped tail: the set is no longer known
        return indices[:n] if isinstance(sampler, SequentialSampler) else None
    return indices
