"""Wire models of stored-spectra queries: layer rows, summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from api_schemas.layer_fields import BRIEF_FIELDS
from api_schemas.profile import LayerProfile, Provenance


class StoredLayer(BaseModel):
    """Where a stored layer came from: its row id, job, checkpoint, architecture and node."""

    model_config = ConfigDict(extra="forbid")

    id: int
    job_id: str
    checkpoint_id: str | None = None
    architecture: str | None = None
    node_id: str | None = None
    step: int | None = Field(None, description="the training step of the job's checkpoint")


class LayerRow(StoredLayer, LayerProfile):
    """A stored layer: every LayerProfile field plus where and when it was computed."""

    model_config = ConfigDict(extra="forbid")

    def profile(self) -> LayerProfile:
        """The stored LayerProfile alone, without the row's storage fields."""
        return LayerProfile.model_validate(self.model_dump(include=set(LayerProfile.model_fields)))


def _brief_model() -> type[StoredLayer]:
    """``LayerBrief``: StoredLayer and the brief fields of the registry, each typed and
    described as its LayerProfile field is."""
    profile_fields = LayerProfile.model_fields
    fields: dict[str, Any] = {
        f.name: (profile_fields[f.name].annotation, profile_fields[f.name])
        for f in BRIEF_FIELDS
        if f.name not in StoredLayer.model_fields
    }
    return create_model(
        "LayerBrief",
        __base__=StoredLayer,
        __doc__=_BRIEF_DOC,
        __module__=__name__,
        **fields,
    )


_BRIEF_DOC = """``GET /v1/layers?view=brief``: the indexed scalars of a stored layer, no arrays.

Served from the table's columns alone (the stored profile is not read), so a page of
these stays cheap at any store size; arrays come from ``GET /v1/layers/{id}``. Its fields:
the registry's brief fields (``api_schemas.layer_fields.BRIEF_FIELDS``).
"""

if TYPE_CHECKING:

    class LayerBrief(StoredLayer):
        """The brief fields are made at import from the registry (``_brief_model``)."""

else:
    LayerBrief = _brief_model()


class LayerDetail(LayerRow):
    """``GET /v1/layers/{id}``: the row plus the provenance of its numbers."""

    provenance: Provenance = Field(default_factory=Provenance)
    dtype: str | None = None
    top_k: int | None = None


class SummaryRow(BaseModel):
    kind: str
    n: int
    alpha_mean: float | None = None
    alpha_sd: float | None = None
    alpha_n: int = 0
    gamma_mean: float | None = None
    gamma_sd: float | None = None
    gamma_n: int = 0
    s_mean: float | None = None
    s_sd: float | None = None
    s_n: int = 0


class Summary(BaseModel):
    jobs: list[str]
    rows: list[SummaryRow]
