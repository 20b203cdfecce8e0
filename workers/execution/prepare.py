"""One preparation path: the local CLI and the service's jobs both start a profile here.

In: the measurement settings, the user's loss (None: the one that fits the model's head),
where the model comes from and where the data comes from. Out: the model in eval mode, the
measurement batch (B examples drawn by the seed, indices recorded), the names of the layers
to profile, the settings with the loss resolved, and one ``Provenance``. Everything after
this (one process or Ray tasks) computes the same float64 numbers from the same batch.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from api_schemas import ProfileSettings, Provenance
from workers.curvature.engine import list_layer_names
from workers.curvature.graph import example_forward
from workers.curvature.measurement import own_loss_split_problem
from workers.curvature.static_batch import (
    batch_range_of,
    ranged_micro_batch,
    static_batch_of,
    static_batch_problem,
)
from workers.data import Dataset, check_fits, measurement_batch, open_dataset
from workers.data.text import TEXT_SUFFIXES, tokenize_text
from workers.errors import IntakeError
from workers.intake.checkpoints import LoadedModel, load_checkpoint, load_zoo
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits
from workers.versions import device_label, library_versions


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a checkpoint on disk in any form ``load_checkpoint``
    accepts (``path``, with ``weights`` for a config .json), zoo weights with their config
    (``weights`` + ``zoo_config``), or a zoo architecture at random initialisation drawn by the
    seed (``zoo_config`` alone)."""

    path: str | None = None
    weights: str | None = None
    zoo_config: dict[str, Any] | None = None
    allow_pickle: bool = False


@dataclass(frozen=True)
class DataSource:
    """A data file (``.npz``/``.safetensors``), plain text (``.txt``, tokenized by
    ``tokenizer`` or else the model directory's ``tokenizer.json`` into windows of
    ``seq_len`` tokens) or the name of a built-in set."""

    source: str
    sha256: str | None = None  # known already (an uploaded dataset's id)
    tokenizer: str | None = None
    seq_len: int = 128


def open_data(
    data: DataSource, model: ModelSource, limits: IntakeLimits = DEFAULT_LIMITS
) -> Dataset:
    """The dataset ``data`` names (plain text needs the model's tokenizer)."""
    if Path(data.source).suffix.lower() in TEXT_SUFFIXES:
        tokenizer = data.tokenizer
        if tokenizer is None and model.path is not None and Path(model.path).is_dir():
            tokenizer = str(Path(model.path) / "tokenizer.json")
        if tokenizer is None:
            raise IntakeError(
                f"{data.source} is plain text: give the tokenizer.json to encode it with"
            )
        return tokenize_text(data.source, tokenizer, data.seq_len)
    return open_dataset(data.source, limits)


@dataclass
class Prepared:
    model: nn.Module
    loaded: LoadedModel
    batch: Dataset
    names: list[str]
    settings: ProfileSettings
    provenance: Provenance
    extra: dict[str, Any] = field(default_factory=dict)


def profile_keywords(settings: ProfileSettings) -> dict[str, Any]:
    """``workers.curvature.profile_model``'s keyword arguments for ``settings``."""
    return {
        "loss": settings.loss,
        "top_k": settings.top_k,
        "lanczos_steps": settings.lanczos_steps,
        "dtype": torch.float64 if settings.dtype == "float64" else torch.float32,
        "layers": settings.layers,
        "seed": settings.seed,
        "micro_batch_size": settings.micro_batch_size,
        "variants": settings.variants,
        "hvp_diagnostics": settings.hvp_diagnostics,
    }


def load_model(
    source: ModelSource, seed: int, limits: IntakeLimits = DEFAULT_LIMITS
) -> LoadedModel:
    """The model ``source`` names, in eval mode, each file and the model's size within
    ``limits`` before anything is built."""
    if source.path is not None:
        return load_checkpoint(
            source.path, weights=source.weights, allow_pickle=source.allow_pickle, limits=limits
        )
    if source.zoo_config is None:
        raise IntakeError("a model source needs a checkpoint path or a zoo config")
    if source.weights is not None:
        return load_zoo(source.zoo_config, Path(source.weights), limits)
    from workers.zoo import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(source.zoo_config, limits.max_model_parameters)
    config: dict[str, Any] = dict(getattr(model, "curvprof_config", {}))
    loss = str(getattr(model, "default_loss", "cross_entropy"))
    return LoadedModel(model.eval(), config, config["arch"], "", "zoo", loss)


def default_loss(loaded: LoadedModel, data: Dataset) -> str:
    """The model's own default (its head), else ``lm`` for the built-in text, else
    ``cross_entropy``."""
    if loaded.default_loss:
        return loaded.default_loss
    return "lm" if data.name == "text" else "cross_entropy"


def prepare(
    settings: ProfileSettings,
    model_source: ModelSource,
    data_source: DataSource,
    *,
    loss: str | None = None,
    device: str | torch.device = "cpu",
    limits: IntakeLimits = DEFAULT_LIMITS,
) -> Prepared:
    """Load, check and draw everything a profile needs; IntakeError (one line) on bad input.

    ``settings.loss`` is replaced by ``loss`` when given, else by the model's default loss.
    """
    loaded = load_model(model_source, settings.seed, limits)
    try:
        loaded.model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise IntakeError(f"cannot use device {str(device)!r}: {exc}") from None
    dataset = open_data(data_source, model_source, limits)
    resolved = settings.model_copy(update={"loss": loss or default_loss(loaded, dataset)})
    check_fits(loaded.model, dataset, resolved.loss)
    batch, indices = measurement_batch(dataset, resolved.batch_size, resolved.seed)
    split = own_loss_split_problem(resolved.loss, resolved.micro_batch_size, len(batch))
    if split:
        raise IntakeError(split)
    static = static_batch_of(loaded.model)
    problem = static and static_batch_problem(static, len(batch), resolved.micro_batch_size)
    bounds = batch_range_of(loaded.model)
    if bounds is not None and not problem:
        problem = ranged_micro_batch(bounds, len(batch), resolved.micro_batch_size)[1]
    if problem:
        raise IntakeError(f"{model_source.path or loaded.arch}: {problem}")
    example = example_forward(batch.inputs, batch.attention_mask, static or None, batch.targets)
    names = list_layer_names(loaded.model, resolved.layers, example)
    if not names:
        if not resolved.layers:
            raise IntakeError(f"no layer of {loaded.arch} is analysable")
        every = ", ".join(list_layer_names(loaded.model, None, example))
        raise IntakeError(
            f"--layers {resolved.layers!r} matches no layer name or kind; the layers: {every}"
        )
    provenance = Provenance(
        checkpoint_sha256=loaded.sha256 or None,
        data_name=dataset.name,
        data_sha256=dataset.sha256 or data_source.sha256,
        data_seed=resolved.seed,
        data_indices=indices,
        versions=library_versions(),
        hostname=socket.gethostname(),
        device=device_label(torch.device(device)),
    )
    return Prepared(loaded.model, loaded, batch, names, resolved, provenance)
