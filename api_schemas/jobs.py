"""Wire models of profiling jobs and batches (the service's REST API)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
    model_validator,
)

from api_schemas.enums import TERMINAL_STATES as TERMINAL_STATES
from api_schemas.enums import BuiltinDataset as BuiltinDataset
from api_schemas.enums import JobState as JobState
from api_schemas.enums import LayerState as LayerState
from api_schemas.enums import NamedLoss, VariantName
from api_schemas.profile import MeasurementSettings, PreconditionerParams, ProfileSettings
from api_schemas.wire import Step, Text, UtcDatetime

Variant = VariantName  # the name this module gave it first

T = TypeVar("T")

MAX_BATCH_JOBS = 1000
"""The most checkpoints (so jobs) one batch may hold."""
JobName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^,]+$"),
]
MAX_TAGS = 32


class Page(BaseModel, Generic[T]):
    """One page of a keyset-paginated listing; pass ``next_cursor`` back as ``cursor``."""

    items: list[T]
    next_cursor: str | None = None


class ProfileRequest(MeasurementSettings):
    """Measurement settings shared by a job and a batch (everything but the checkpoint): the
    fields of :class:`MeasurementSettings` at the top level of the body, beside these."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: Text | None = Field(None, description="id of an uploaded dataset")
    dataset: BuiltinDataset | None = Field(None, description="a built-in dataset, no upload")
    loss: NamedLoss | None = Field(
        None, description="None: the loss that fits the model's head (its default loss)"
    )
    zoo_config: dict[str, Any] | None = Field(
        None, description="architecture config for a `zoo:<arch>` checkpoint reference"
    )
    name: JobName | None = Field(None, description="a label for the job (e.g. the training run)")
    tags: list[Tag] = Field(
        default_factory=list, max_length=MAX_TAGS, description="labels to filter on (no commas)"
    )

    @model_validator(mode="after")
    def _one_dataset(self) -> ProfileRequest:
        if (self.dataset_id is None) == (self.dataset is None):
            raise ValueError("give exactly one of dataset_id (an upload) or dataset (a built-in)")
        self.tags = list(dict.fromkeys(self.tags))  # each tag once, in the order given
        return self

    def to_settings(self, default_loss: NamedLoss = "cross_entropy") -> ProfileSettings:
        """The engine's settings; ``default_loss`` stands in when the spec names no loss."""
        measured = self.model_dump(include=set(MeasurementSettings.model_fields))
        return ProfileSettings.model_validate({**measured, "loss": self.loss or default_loss})


class JobSpec(ProfileRequest):
    """``POST /v1/jobs``: one checkpoint, one dataset, one set of settings."""

    checkpoint_id: Text = Field(..., description="an uploaded checkpoint id or `zoo:<arch>`")
    step: Step | None = Field(None, description="the training step of the checkpoint")


class BatchSpec(ProfileRequest):
    """``POST /v1/batches``: many checkpoints, one spec; one job per checkpoint.

    A checkpoint series (one training run saved every N steps) gives ``steps``, one per
    checkpoint in the same order; every job of the batch shares ``name`` and ``tags``.
    """

    checkpoint_ids: list[Text] = Field(..., min_length=1, max_length=MAX_BATCH_JOBS)
    steps: list[Step] | None = Field(
        None, description="training step of each checkpoint, in the order of checkpoint_ids"
    )

    @model_validator(mode="after")
    def _one_step_per_checkpoint(self) -> BatchSpec:
        if self.steps is not None and len(self.steps) != len(self.checkpoint_ids):
            raise ValueError(
                f"steps has {len(self.steps)} entries for {len(self.checkpoint_ids)} checkpoint_ids"
            )
        return self

    def job_spec(self, checkpoint_id: str, step: int | None = None) -> JobSpec:
        fields = self.model_dump(exclude={"checkpoint_ids", "steps"})
        return JobSpec(checkpoint_id=checkpoint_id, step=step, **fields)

    def job_specs(self) -> list[JobSpec]:
        """One job spec per checkpoint, each with its step."""
        steps = self.steps if self.steps is not None else [None] * len(self.checkpoint_ids)
        return [
            self.job_spec(ckpt, step) for ckpt, step in zip(self.checkpoint_ids, steps, strict=True)
        ]


class LayerProgress(BaseModel):
    name: str
    state: LayerState
    error: str | None = None
    wall_seconds: float | None = None
    node_id: str | None = None
    attempts: int = 0


class JobProgress(BaseModel):
    done: int = 0
    total: int = 0
    failed: int = 0
    layers: list[LayerProgress] = Field(default_factory=list)


class JobTimings(BaseModel):
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    wall_seconds: float | None = Field(None, description="finished - started")
    compute_seconds: float = Field(0.0, description="sum of the layers' wall seconds")


class Job(BaseModel):
    id: str
    state: JobState
    spec: JobSpec
    architecture: str | None = None
    batch_id: str | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    timings: JobTimings
    error: str | None = None

    # the labels live in the spec (what was submitted); these read them at the top level
    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str | None:
        return self.spec.name

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tags(self) -> list[str]:
        return self.spec.tags

    @computed_field  # type: ignore[prop-decorator]
    @property
    def step(self) -> int | None:
        return self.spec.step


class JobLogLine(BaseModel):
    """One line of a job's log; ``id`` orders the lines (pass the last as ``after``)."""

    id: int
    at: UtcDatetime
    level: str
    message: str


class JobLogs(BaseModel):
    """``GET /v1/jobs/{id}/logs``: the lines after ``after``, and the job's state now."""

    job_id: str
    state: JobState
    lines: list[JobLogLine]


class Batch(BaseModel):
    id: str
    jobs: list[Job]


class LayerPreconditioner(BaseModel):
    layer_id: int
    name: str
    kind: str
    alpha: float | None = None
    params: list[PreconditionerParams] = Field(default_factory=list)


class JobPreconditioner(BaseModel):
    """``GET /v1/jobs/{id}/preconditioner``: T(sigma; alpha) parameters of every stored layer."""

    job_id: str
    layers: list[LayerPreconditioner]
