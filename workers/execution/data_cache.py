"""The measurement batch of a job, read by each worker process from its stored dataset.

A task gets a :class:`DataReference` (where the data comes from, the sha256 the job was
prepared from and the indices of the measurement batch), not the arrays. :func:`cached_dataset`
opens the data through ``workers.execution.prepare.open_data`` (the code the CLI uses), checks
the sha256 and keeps the last :data:`CACHE_SIZE` datasets, so the tasks of one job on one worker
read it once. A built-in set is a reference by name, checked by the sha256 of its content
where it has one (``synthetic`` has none: it is a function of its seed alone).
:class:`DataPayload` is the same batch by value, for data that has no stored file (benchmarks
on synthetic batches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from workers.data import Dataset
from workers.errors import IntakeError
from workers.execution.prepare import DataSource, ModelSource, open_data
from workers.execution.process_cache import ProcessCache
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits

CACHE_SIZE = 2

BatchTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class DataReference:
    """A job's measurement batch by reference: ``source`` as the runner opened it (``model``
    is where a plain-text source finds its tokenizer), ``sha256`` of the dataset as opened
    there, and the ``indices`` of the examples the runner drew (``Provenance.data_indices``)."""

    source: DataSource
    sha256: str
    indices: tuple[int, ...]
    model: ModelSource = field(default_factory=ModelSource)
    limits: IntakeLimits = field(default=DEFAULT_LIMITS)

    def cache_key(self) -> tuple[str, ...]:
        where = json.dumps([self.source.source, self.source.tokenizer, self.source.seq_len])
        return (self.sha256, where, str(self.model.path))

    def tensors(self) -> BatchTensors:
        """The batch's inputs, targets and mask, fresh tensors for the caller to own."""
        batch = cached_dataset(self).subset(list(self.indices))
        return batch.inputs, batch.targets, batch.attention_mask


@dataclass
class DataPayload:
    """A batch by value, put into the object store once per job and shared by its tasks."""

    inputs: np.ndarray
    targets: np.ndarray
    attention_mask: np.ndarray | None = None

    @classmethod
    def from_tensors(
        cls, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
    ) -> DataPayload:
        return cls(
            inputs=inputs.detach().cpu().numpy(),
            targets=targets.detach().cpu().numpy(),
            attention_mask=None if mask is None else mask.detach().cpu().numpy(),
        )

    def tensors(self) -> BatchTensors:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, copy=True))

        mask = None if self.attention_mask is None else t(self.attention_mask)
        return t(self.inputs), t(self.targets), mask


BatchSource = DataReference | DataPayload
"""What a task is given to profile on: a stored dataset by reference, or a batch by value."""

_datasets: ProcessCache[tuple[str, ...], Dataset] = ProcessCache(CACHE_SIZE)


def datasets_read() -> int:
    """How many datasets this process has opened from references so far."""
    return _datasets.built


def clear_data_cache() -> None:
    _datasets.clear()


def open_data_reference(reference: DataReference) -> Dataset:
    """The whole dataset ``reference`` names; IntakeError if it is not the one the job was
    prepared from."""
    dataset = open_data(reference.source, reference.model, reference.limits)
    if (dataset.sha256 or "") != reference.sha256:
        raise IntakeError(
            f"{reference.source.source}: sha256 {dataset.sha256 or '-'} is not the "
            f"{reference.sha256 or '-'} the job was prepared from"
        )
    if reference.indices and max(reference.indices) >= len(dataset):
        raise IntakeError(f"{reference.source.source}: fewer examples than the job drew from")
    return dataset


def cached_dataset(reference: DataReference) -> Dataset:
    """The dataset, opened on first use in this process; the last :data:`CACHE_SIZE` are
    kept. Callers take subsets (copies) and never change it."""
    return _datasets.get(reference.cache_key(), lambda: open_data_reference(reference))
