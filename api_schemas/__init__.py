"""Pydantic wire models shared by the service, the workers and the client."""

from api_schemas.profile import (
    Decomposition,
    DTypeName,
    HkRoute,
    LanczosSummary,
    LayerKind,
    LayerProfile,
    LossName,
    PreconditionerMode,
    PreconditionerParams,
    Profile,
    ProfileSettings,
    Provenance,
)

__all__ = [
    "DTypeName",
    "Decomposition",
    "HkRoute",
    "LanczosSummary",
    "LayerKind",
    "LayerProfile",
    "LossName",
    "PreconditionerMode",
    "PreconditionerParams",
    "Profile",
    "ProfileSettings",
    "Provenance",
]

from api_schemas.artifacts import Checkpoint, CheckpointFormat, Dataset, DatasetFormat
from api_schemas.jobs import (
    TERMINAL_STATES,
    Batch,
    BatchSpec,
    Job,
    JobPreconditioner,
    JobProgress,
    JobSpec,
    JobState,
    JobTimings,
    LayerPreconditioner,
    LayerProgress,
    LayerState,
    Page,
    ProfileRequest,
)
from api_schemas.queries import LayerBrief, LayerDetail, LayerRow, Summary, SummaryRow

__all__ += [
    "TERMINAL_STATES",
    "Batch",
    "BatchSpec",
    "Checkpoint",
    "CheckpointFormat",
    "Dataset",
    "DatasetFormat",
    "Job",
    "JobPreconditioner",
    "JobProgress",
    "JobSpec",
    "JobState",
    "JobTimings",
    "LayerBrief",
    "LayerDetail",
    "LayerPreconditioner",
    "LayerProgress",
    "LayerRow",
    "LayerState",
    "Page",
    "ProfileRequest",
    "Summary",
    "SummaryRow",
]
