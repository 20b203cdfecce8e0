"""``JobFilters``: the query of ``GET /v1/jobs``, declared once for the router, the store,
the dashboard and the client."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from api_schemas.wire import INT64_MAX, split_csv

StepQuery = Annotated[int | None, Field(ge=0, le=INT64_MAX)]


class JobFilters(BaseModel):
    """Which jobs a listing shows (all of the given conditions); an empty value, as an HTML
    form sends for a field left blank, is no condition."""

    state: str | None = Field(default=None, description="comma-separated states")
    checkpoint_id: str | None = None
    batch_id: str | None = None
    name: str | None = Field(default=None, description="jobs of this name")
    tag: str | None = Field(default=None, description="tag(s), comma-separated: all of them")
    step: StepQuery = Field(default=None, description="jobs at this training step")
    step_min: StepQuery = None
    step_max: StepQuery = None
    id_prefix: str | None = Field(
        default=None, pattern="^[0-9a-f]{1,32}$", description="jobs whose id starts so"
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, values: Any) -> Any:
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if v != ""}
        return values

    def states(self) -> list[str]:
        return split_csv(self.state) or []

    def tags(self) -> list[str] | None:
        return split_csv(self.tag)
