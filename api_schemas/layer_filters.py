"""The query of the layer listings as one model: every filter of the registry
(``layer_fields.FILTER_PARAMS``) and the job labels.

One model derived from the registry, in place of a hand-built signature of 21 parameters.
FastAPI validates it once instead of field by field (about 8% fewer Python calls a layer
page; it still extracts each field on its own). The OpenAPI lists the model's fields as
query parameters all the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, create_model

from api_schemas.layer_fields import FILTER_PARAMS, FilterParam
from api_schemas.wire import INT64_MAX


def _field(param: FilterParam) -> tuple[Any, Any]:
    """The model field of one registry filter (integers bounded as int64 >= 0)."""
    if param.value_type is int:
        kind: Any = Annotated[int | None, Field(ge=0, le=INT64_MAX)]
    else:
        kind = param.value_type | None
    return kind, Field(default=None, description=param.description)


_LABELS: dict[str, tuple[Any, Any]] = {
    "job_name": (str | None, Field(default=None, description="layers of jobs of this name")),
    "tag": (str | None, Field(default=None, description="jobs' tag(s), comma-separated: all")),
}

if TYPE_CHECKING:  # the fields come from the registry at run time

    class LayerFilterQuery(BaseModel):
        """Which stored layers a listing shows (all of the given conditions)."""

else:
    LayerFilterQuery = create_model(
        "LayerFilterQuery",
        __doc__="Which stored layers a listing shows (all of the given conditions).",
        **{name: _field(param) for name, param in FILTER_PARAMS.items()},
        **_LABELS,
    )
