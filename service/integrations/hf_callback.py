"""A Hugging Face ``TrainerCallback`` that profiles the model every N steps
(``pip install 'curvprof[hf]'``): ``Trainer(..., callbacks=[CurvprofCallback(profiler)])``."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from service.integrations.training import CheckpointProfiler


class CurvprofCallback(TrainerCallback):
    """After each optimiser step that is due (``global_step`` a multiple of ``every``), save
    the model and profile it with ``profiler`` (in-process or through the service)."""

    def __init__(self, profiler: CheckpointProfiler) -> None:
        self.profiler = profiler

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> TrainerControl:
        if model is not None and state.is_world_process_zero:
            self.profiler.maybe_profile(model, state.global_step)
        return control
