"""Profiling during training: every N steps, save the checkpoint and profile it, either
in-process (``profile_model`` on the saved weights) or by submitting it to the service, and
record the step (with the run's name and tags) next to the result.

A plain PyTorch loop calls :meth:`CheckpointProfiler.maybe_profile` after each optimiser
step; a Hugging Face ``Trainer`` gets ``service.integrations.hf_callback.CurvprofCallback``.

What is saved, per model:

- a zoo model (``curvprof_config``): ``config.json`` + ``model.safetensors``, which the
  service reads back (the only kind the service path accepts);
- a Hugging Face model (``save_pretrained``): its directory, reloaded through
  ``workers.intake`` (eager attention) before profiling;
- any other module: its ``state_dict`` as ``model.safetensors`` (in-process only).

Profiling never changes the training run: the model is deep-copied by the engine, its
train/eval mode is restored, and the global random state is forked around the measurement.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import api_schemas
from api_schemas import NamedLoss, Profile
from workers.curvature import profile_model
from workers.intake.checkpoints import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from service.client import CurvprofClient


@dataclass(frozen=True)
class CheckpointRecord:
    """One profiled checkpoint: its step and directory, and the profile (in-process) or the
    id of the service job measuring it."""

    step: int
    checkpoint_dir: Path
    profile: Profile | None = None
    job_id: str | None = None


class MeasurementSettings(api_schemas.MeasurementSettings):
    """How each checkpoint is measured: the settings of a job spec (declared once, in
    ``api_schemas.MeasurementSettings``), and the loss, None for the model's default (lm for
    a causal LM, else cross_entropy). In-process the whole batch given is measured."""

    loss: NamedLoss | None = None


@dataclass
class CheckpointProfiler:
    """Profile a model every ``every`` optimiser steps (steps ``every``, ``2·every``, ...).

    In-process: give the measurement batch (``inputs``, ``targets``, optionally
    ``attention_mask``). Through the service: give ``client`` and a ``dataset`` (a built-in
    name, or the batch, which is uploaded once); the model must be a zoo model.
    """

    every: int
    out_dir: Path
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    settings: MeasurementSettings = field(default_factory=MeasurementSettings)
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    client: CurvprofClient | None = None
    dataset: str | None = None
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None
    records: list[CheckpointRecord] = field(default_factory=list)
    _dataset_id: str | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError("every must be >= 1")
        self.out_dir = Path(self.out_dir)
        if self.client is None and (self.inputs is None or self.targets is None):
            raise ValueError("in-process profiling needs inputs and targets")
        if self.client is not None and self.dataset is None and self.inputs is None:
            raise ValueError("profiling through the service needs a dataset or inputs/targets")

    def due(self, step: int) -> bool:
        return step > 0 and step % self.every == 0

    def maybe_profile(self, model: nn.Module, step: int) -> CheckpointRecord | None:
        """After optimiser step ``step``: profile when it is due, else nothing."""
        return self.profile(model, step) if self.due(step) else None

    def profile(self, model: nn.Module, step: int) -> CheckpointRecord:
        """Save ``model`` as the checkpoint of ``step`` and profile it now."""
        directory = save_model(model, self.out_dir / f"step-{step:08d}")
        if self.client is not None:
            record = CheckpointRecord(step, directory, job_id=self._submit(model, directory, step))
        else:
            record = CheckpointRecord(step, directory, profile=self._measure(model, directory))
            if self.mlflow_run_id is not None:
                from service.integrations.mlflow_run import log_profile

                assert record.profile is not None
                log_profile(
                    record.profile,
                    step=step,
                    run_id=self.mlflow_run_id,
                    tracking_uri=self.mlflow_tracking_uri,
                )
        self.records.append(record)
        return record

    @property
    def job_ids(self) -> list[str]:
        return [r.job_id for r in self.records if r.job_id is not None]

    def compare_url(self, base_url: str | None = None) -> str:
        """The dashboard's compare view of the jobs submitted so far."""
        url = (base_url or (str(self.client.http.base_url) if self.client else "")).rstrip("/")
        return f"{url}/ui/compare?jobs={','.join(self.job_ids)}"

    # ------------------------------------------------------------------ in-process

    def _measure(self, model: nn.Module, directory: Path) -> Profile:
        assert self.inputs is not None and self.targets is not None
        target, loss = measured_model(model, directory)
        s = self.settings
        was_training = model.training
        try:
            with torch.random.fork_rng(devices=[]):
                return profile_model(
                    target,
                    self.inputs,
                    self.targets,
                    loss=s.loss or loss,
                    micro_batch_size=s.micro_batch_size,
                    top_k=s.top_k,
                    lanczos_steps=s.lanczos_steps,
                    dtype=torch.float64 if s.dtype == "float64" else torch.float32,
                    layers=s.layers,
                    seed=s.seed,
                    variants=s.variants,
                    hvp_diagnostics=s.hvp_diagnostics,
                    attention_mask=self.attention_mask,
                )
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ service

    def _submit(self, model: nn.Module, directory: Path, step: int) -> str:
        assert self.client is not None
        config = getattr(model, "curvprof_config", None)
        if not isinstance(config, dict) or "hf_config" in config:
            raise ValueError("profiling through the service needs a zoo model (curvprof_config)")
        checkpoint = self.client.upload_checkpoint(directory / "model.safetensors", config)
        s = self.settings
        spec: dict[str, Any] = {
            **s.model_dump(mode="json"),
            "checkpoint_id": checkpoint.id,
            "loss": s.loss or "cross_entropy",
            "name": self.name,
            "tags": self.tags,
            "step": step,
            **self._dataset_ref(),
        }
        return str(self.client.submit(spec).id)

    def _dataset_ref(self) -> dict[str, Any]:
        """A built-in dataset, or the measurement batch uploaded once (the whole batch)."""
        if self.dataset is not None:
            return {"dataset": self.dataset}
        assert self.client is not None and self.inputs is not None and self.targets is not None
        if self._dataset_id is None:
            from safetensors.torch import save_file

            tensors = {"inputs": self.inputs, "targets": self.targets}
            if self.attention_mask is not None:
                tensors["attention_mask"] = self.attention_mask
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "measurement.safetensors"
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path)
                self._dataset_id = self.client.upload_dataset(path).id
        return {"dataset_id": self._dataset_id, "batch_size": int(self.inputs.shape[0])}


def is_hugging_face(model: nn.Module) -> bool:
    return callable(getattr(model, "save_pretrained", None)) and hasattr(model, "config")


def save_model(model: nn.Module, directory: Path) -> Path:
    """Write the checkpoint of ``model`` into ``directory`` (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(getattr(model, "curvprof_config", None), dict):
        return save_checkpoint(model, directory)
    if is_hugging_face(model):
        model.save_pretrained(str(directory), safe_serialization=True)  # type: ignore[operator]
        return directory
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))
    return directory


def measured_model(model: nn.Module, directory: Path) -> tuple[nn.Module, str]:
    """The module to profile and its default loss: a Hugging Face model reloaded from its
    saved directory (the engine's wrapper, eager attention), any other the model itself."""
    if is_hugging_face(model) and not isinstance(getattr(model, "curvprof_config", None), dict):
        loaded = load_checkpoint(str(directory))
        return loaded.model, loaded.default_loss or "cross_entropy"
    return model, "cross_entropy"
