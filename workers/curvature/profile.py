"""``profile_model``: the public whole-model entry point (a model in memory, one batch)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from api_schemas import DEFAULT_VARIANTS, Profile, ProfileSettings, Provenance
from workers.curvature.custom_loss import check_loss_callable
from workers.curvature.engine import PhaseListener, Progress, list_layer_names, profile_layers
from workers.curvature.finite import check_finite
from workers.curvature.graph import example_forward
from workers.curvature.inventory import layer_inventory
from workers.curvature.loader import collect_batches
from workers.curvature.measurement import CUSTOM_LOSS, OutputLoss, draw_indices
from workers.curvature.static_batch import static_batch_of
from workers.versions import device_label, library_versions


def profile_model(
    model: nn.Module,
    inputs: torch.Tensor | Iterable[Any],
    targets: torch.Tensor | None = None,
    loss: str | OutputLoss = "cross_entropy",
    top_k: int = 20,
    lanczos_steps: int = 20,
    dtype: torch.dtype = torch.float64,
    layers: str | None = None,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    micro_batch_size: int | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    hvp_diagnostics: bool = True,
    attention_mask: torch.Tensor | None = None,
    progress: Progress | None = None,
    provenance: Provenance | None = None,
    on_phase: PhaseListener | None = None,
) -> Profile:
    """Curvature profile of every analysable matrix of ``model`` (or those matching ``layers``).

    The whole ``inputs`` is the measurement batch unless ``batch_size`` is given, in which case
    B examples are drawn with ``seed`` and their indices recorded in the provenance (as
    positions in ``provenance.data_indices`` when the caller gives the rows' own indices).
    A NaN or Inf in the inputs, targets or weights raises ``NonFiniteError``.

    ``inputs`` may instead be an iterable of batches (a ``DataLoader``; ``targets`` None):
    they are measured as one set in micro-batches of the loader's batch size
    (``workers.curvature.loader``). ``loss`` is a name or any mean-reduced callable
    ``loss(outputs, targets)``, checked once (``workers.curvature.custom_loss``).
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    known: list[int] | None = None
    if not isinstance(inputs, torch.Tensor):
        if targets is not None or batch_size is not None:
            raise ValueError(
                "a data loader is the whole measurement set: give no targets and no batch_size"
            )
        loaded = collect_batches(inputs)
        inputs, targets, known = loaded.inputs, loaded.targets, loaded.indices
        attention_mask = loaded.attention_mask if attention_mask is None else attention_mask
        micro_batch_size = micro_batch_size or loaded.batch_size
    if targets is None:
        raise ValueError("targets are needed with an inputs tensor")
    check_finite(model, {"inputs": inputs, "targets": targets, "attention_mask": attention_mask})
    loss_fn: OutputLoss | None = None
    if callable(loss):
        loss_fn, loss = loss, CUSTOM_LOSS
        with torch.no_grad():
            probe = _probe_outputs(model, inputs, attention_mask, targets)
        check_loss_callable(loss_fn, probe, targets[: probe.shape[0]])
    n = int(inputs.shape[0])
    indices = draw_indices(n, batch_size, seed)
    if len(indices) < n:
        idx = torch.tensor(indices, dtype=torch.long)
        inputs, targets = inputs[idx], targets[idx]
        attention_mask = None if attention_mask is None else attention_mask[idx]
    settings = ProfileSettings(
        loss=loss,  # type: ignore[arg-type]
        batch_size=len(indices),
        micro_batch_size=micro_batch_size,
        top_k=top_k,
        lanczos_steps=lanczos_steps,
        dtype="float64" if dtype == torch.float64 else "float32",
        seed=seed,
        layers=layers,
        variants=list(variants),  # type: ignore[arg-type]
        hvp_diagnostics=hvp_diagnostics,
    )
    example = example_forward(inputs, attention_mask, static_batch_of(model), targets)
    names = list_layer_names(model, layers, example)
    if not names:
        raise ValueError(
            f"no analysable layer matches {layers!r}" if layers else "model has no analysable layer"
        )
    started = time.perf_counter()
    results = profile_layers(
        model,
        inputs,
        targets,
        names,
        settings,
        attention_mask=attention_mask,
        progress=progress,
        on_phase=on_phase,
        loss_fn=loss_fn,
    )
    prov = provenance.model_copy() if provenance is not None else Provenance()
    given = prov.data_indices
    if given and len(given) != n:
        raise ValueError(f"provenance gives {len(given)} data indices for {n} examples")
    prov.data_seed = seed
    own = known if known is not None else given
    prov.data_indices = [own[i] for i in indices] if own else indices
    prov.versions = {**library_versions(), **prov.versions}
    prov.hostname = prov.hostname or socket.gethostname()
    prov.device = device_label(next(model.parameters()).device)
    _, skipped = layer_inventory(model, example)
    config = getattr(model, "curvprof_config", None)
    return Profile(
        settings=settings,
        layers=results,
        provenance=prov,
        skipped=skipped,
        architecture=config.get("arch") if isinstance(config, dict) else type(model).__name__,
        wall_seconds=time.perf_counter() - started,
    )


def _probe_outputs(
    model: nn.Module,
    inputs: torch.Tensor,
    attention_mask: torch.Tensor | None,
    targets: torch.Tensor,
) -> torch.Tensor:
    """The model's outputs on its first examples (its static batch, else two), float64."""
    n = static_batch_of(model) or min(2, int(inputs.shape[0]))
    return example_forward(inputs, attention_mask, n, targets)[-1](model).to(torch.float64)
