"""How the store keeps a layer's :class:`~api_schemas.Provenance`: one ``layer_results``
column per field, made from the type itself.

A string field is a ``String(max_length)`` column (``Text`` without a bound), nullable as the
field is; an integer an ``Integer``; a list or mapping JSON text. ``node_id`` is also a field
of the layer registry (filtered on), so it is that column. The job's provenance is the same
type, as JSON, in ``jobs.provenance_json``.
"""

from __future__ import annotations

import json
from typing import Any

from annotated_types import MaxLen
from pydantic.fields import FieldInfo
from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import MappedColumn, mapped_column

from api_schemas import Provenance
from api_schemas.layer_fields import FIELDS

# the fields kept as columns of their own here (not those the layer registry declares)
COLUMNS: tuple[str, ...] = tuple(name for name in Provenance.model_fields if name not in FIELDS)


def _json_type(info: FieldInfo) -> type | None:
    """``list`` or ``dict`` for a field kept as JSON text, else None."""
    origin = getattr(info.annotation, "__origin__", None)
    return origin if origin in (list, dict) else None


def _max_length(info: FieldInfo) -> int | None:
    return next((m.max_length for m in info.metadata if isinstance(m, MaxLen)), None)


def column(name: str) -> MappedColumn[Any]:
    """The column that holds the Provenance field ``name``."""
    info = Provenance.model_fields[name]
    container = _json_type(info)
    if container is not None:
        return mapped_column(name, Text, nullable=False, default=json.dumps(container()))
    if info.annotation is int:
        return mapped_column(name, Integer, nullable=False, default=info.default)
    length = _max_length(info)
    return mapped_column(name, String(length) if length else Text, nullable=True)


def to_columns(provenance: Provenance) -> dict[str, Any]:
    """The column values of ``provenance`` (every field, ``node_id`` included)."""
    out: dict[str, Any] = {}
    for name, info in Provenance.model_fields.items():
        value = getattr(provenance, name)
        out[name] = json.dumps(value, sort_keys=True) if _json_type(info) else value
    return out


def from_columns(values: Any) -> Provenance:
    """The Provenance of a row (or of anything with its columns as attributes)."""
    fields: dict[str, Any] = {}
    for name, info in Provenance.model_fields.items():
        value = getattr(values, name)
        if value is not None:
            fields[name] = json.loads(value) if _json_type(info) else value
    return Provenance.model_validate(fields)
