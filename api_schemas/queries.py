"""Wire models of stored-spectra queries: layer rows, summaries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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


class LayerBrief(StoredLayer):
    """``GET /v1/layers?view=brief``: the indexed scalars of a stored layer, no arrays.

    Served from the table's columns alone (the stored profile is not read), so a page of
    these stays cheap at any store size; arrays come from ``GET /v1/layers/{id}``.
    """

    name: str
    kind: str
    k: int = 0
    alpha: float | None = None
    r2_alpha: float | None = None
    gamma: float | None = None
    r2_gamma: float | None = None
    s: float | None = None
    s_eig: float | None = None
    predicted_s: float | None = None
    triangle_relative_error: float | None = None
    pr_h: float | None = None
    wall_seconds: float | None = None
    flags: list[str] = Field(default_factory=list)


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
