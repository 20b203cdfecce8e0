"""The model of a job, built once per worker process from its stored artifact.

A task gets a :class:`ModelReference` (where the model comes from and the sha256 the job was
prepared from), not the weights. :func:`cached_model` opens the artifact through
``workers.execution.prepare.load_model`` (the code the CLI uses), checks the sha256 and keeps
the last :data:`CACHE_SIZE` models, so the tasks of one job on one worker build it once. The
engine profiles a deep copy (``workers.curvature.engine``), so a cached model is never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from torch import nn

from workers.errors import IntakeError
from workers.execution.prepare import ModelSource, load_model
from workers.execution.process_cache import ProcessCache
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits

CACHE_SIZE = 2


@dataclass(frozen=True)
class ModelReference:
    """A job's model by reference: ``source`` as the runner opened it, ``sha256`` as intake
    reported it there (``""`` for a zoo architecture at random initialisation, which
    ``seed`` draws again)."""

    source: ModelSource
    sha256: str
    seed: int = 0
    limits: IntakeLimits = field(default=DEFAULT_LIMITS)

    def cache_key(self) -> tuple[str, ...]:
        config = json.dumps(self.source.zoo_config, sort_keys=True)
        seed = str(self.seed) if not self.sha256 else ""  # only random weights depend on it
        where = f"{self.source.path}|{self.source.weights}|{self.source.allow_pickle}"
        return (self.sha256, config, seed, where)


_models: ProcessCache[tuple[str, ...], nn.Module] = ProcessCache(CACHE_SIZE)


def models_built() -> int:
    """How many models this process has built from references so far."""
    return _models.built


def clear_model_cache() -> None:
    _models.clear()


def open_reference(reference: ModelReference) -> nn.Module:
    """The model ``reference`` names, in eval mode; IntakeError if its file is not the one
    the job was prepared from."""
    loaded = load_model(reference.source, reference.seed, reference.limits)
    if loaded.sha256 != reference.sha256:
        where = reference.source.path or reference.source.weights
        raise IntakeError(
            f"{where}: sha256 {loaded.sha256 or '-'} is not the {reference.sha256 or '-'} "
            "the job was prepared from"
        )
    return loaded.model


def cached_model(reference: ModelReference, device: torch.device) -> nn.Module:
    """The model on ``device``, built on first use in this process; the last
    :data:`CACHE_SIZE` models are kept."""
    key = (*reference.cache_key(), str(device))
    return _models.get(key, lambda: open_reference(reference).to(device))
