"""Every enumeration of the wire models, the maths and the command line, declared once.

Each is a ``Literal`` (what pydantic validates and mypy checks); where code needs the
values at run time it derives them here with ``typing.get_args``, so a value is added in
exactly one place. Losses, variants and preconditioner modes are explained in
docs/engine.md; the job states in docs/reliability.md.
"""

from __future__ import annotations

from typing import Literal, get_args

OutputLossName = Literal["cross_entropy", "mse", "lm"]
"""Losses written as a function of the model's outputs (``workers.curvature.measurement``)."""
NamedLoss = Literal[OutputLossName, "model"]
"""Losses a job or the command line can name; ``model``: a Hugging Face ``outputs.loss``."""
LossName = Literal[NamedLoss, "custom"]
"""Every loss a profile can record; ``custom``: a Python callable given to the API."""

VariantName = Literal["ggn", "ef", "kron", "mc"]
"""Curvature variants measured beside the exact h: Gauss-Newton, empirical Fisher,
Kronecker (K-FAC), Monte-Carlo Fisher."""
DTypeName = Literal["float32", "float64"]
PreconditionerMode = Literal["paper", "newton", "normalized"]
BuiltinDataset = Literal["digits", "text", "synthetic"]
Architecture = Literal["mlp", "vgg", "resnet", "vit", "gpt"]
"""The zoo's architectures; each is the module of that name in ``workers.zoo``."""

SharedPhase = Literal["gradients", "SVD", "K-FAC"]
"""Steps of a profile run once for all its layers, in this order."""
LayerPhase = Literal["h_k", "Lanczos", "fits"]
"""Steps of a profile run for each layer, in this order."""
ProfilePhase = Literal[SharedPhase, LayerPhase]

ActiveJobState = Literal["queued", "running"]
TerminalJobState = Literal["succeeded", "failed", "cancelled"]
JobState = Literal[ActiveJobState, TerminalJobState]
LayerState = Literal["pending", "running", TerminalJobState]
LayerView = Literal["full", "brief"]
"""Views of a layer listing: ``full``, every array of each layer; ``brief``, the indexed
scalars only."""

OUTPUT_LOSSES: tuple[OutputLossName, ...] = get_args(OutputLossName)
NAMED_LOSSES: tuple[NamedLoss, ...] = get_args(NamedLoss)
LOSS_NAMES: tuple[LossName, ...] = get_args(LossName)
VARIANTS: tuple[VariantName, ...] = get_args(VariantName)
DEFAULT_VARIANTS: tuple[VariantName, ...] = ("ef", "kron")
DTYPES: tuple[DTypeName, ...] = get_args(DTypeName)
PRECONDITIONER_MODES: tuple[PreconditionerMode, ...] = get_args(PreconditionerMode)
BUILTIN_DATASETS: tuple[BuiltinDataset, ...] = get_args(BuiltinDataset)
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)
PROFILE_PHASES: tuple[ProfilePhase, ...] = get_args(ProfilePhase)
LAYER_PHASES: tuple[LayerPhase, ...] = get_args(LayerPhase)
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
ACTIVE_STATES: tuple[ActiveJobState, ...] = get_args(ActiveJobState)
TERMINAL_STATES: frozenset[TerminalJobState] = frozenset(get_args(TerminalJobState))
