"""The registry of a stored layer's listed fields: one declaration each.

A stored layer is a ``LayerProfile`` plus where it was stored (``StoredLayer``). The fields
that the listings serve without reading the stored profile (sorting, filters, the brief view)
are columns of the ``layer_results`` table; a few more are read from the stored profile for
the CSV alone. Everything the service derives about these fields comes from
:data:`LAYER_FIELDS`:

- the table's columns (``service.store.models``) and the row written for a profile
  (``service.store.repo.record_layer_result``);
- the sort keys and the filters of ``GET /v1/layers`` (:func:`filter_params`), and the
  brief view (:data:`BRIEF_FIELDS`, the ``LayerBrief`` model);
- the CSV columns (:data:`CSV_FIELDS`), the dashboard's layer table.

Adding a layer scalar is one entry here (and an Alembic migration for its column);
docs/architecture.md, "Adding a layer scalar".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldType = Literal["int", "float", "text", "flags", "shape"]
Source = Literal["store", "job", "task", "profile"]
Stored = Literal["key", "column", "profile"]
Filter = Literal["equals", "one_of", "range", "has"]
FilterOp = Literal["eq", "in", "ge", "le", "has"]


@dataclass(frozen=True)
class LayerField:
    """One field of a stored layer.

    ``source``: who sets it: the store (the row id, the job's id), the job (its checkpoint,
    architecture, step), the task that computed it (the node) or the profile (a
    ``LayerProfile`` field of the same name). ``stored``: ``key`` is a column the table
    declares itself (primary and foreign key), ``column`` a column made from this entry,
    ``profile`` read from the stored profile (so neither sorted, filtered nor brief).
    ``filter``: ``equals`` (``?stem=v``), ``one_of`` (``?stem=a,b``), ``range``
    (``?stem_min=&stem_max=``, and ``?stem=`` on integers) or ``has`` (a flag is carried),
    where the stem is ``query`` or the name.
    """

    name: str
    type: FieldType
    source: Source = "profile"
    stored: Stored = "column"
    nullable: bool = True
    sortable: bool = False
    filter: Filter | None = None
    brief: bool = True
    csv: bool = True
    column: str | None = None
    query: str | None = None
    length: int | None = None
    index: bool | None = None
    description: str = ""

    @property
    def column_name(self) -> str:
        return self.column or self.name

    @property
    def indexed(self) -> bool:
        """Whether the column has an index of its own: by default when it is sorted on or
        filtered by equality or range."""
        if self.index is not None:
            return self.index
        return self.sortable or self.filter in ("equals", "one_of", "range")


@dataclass(frozen=True)
class FilterParam:
    """One query parameter of the layer listings and the comparison it makes."""

    name: str
    field: LayerField
    op: FilterOp

    @property
    def value_type(self) -> type[str] | type[int] | type[float]:
        if self.op in ("in", "has") or self.field.type == "text":
            return str
        return int if self.field.type == "int" else float

    @property
    def description(self) -> str:
        what = self.field.description or self.field.name
        return {
            "eq": what,
            "in": f"{what}: one of, comma-separated",
            "ge": f"{what}: at least",
            "le": f"{what}: at most",
            "has": f"{what}: layers carrying this one",
        }[self.op]


def _csv_only(name: str, type_: FieldType, *, nullable: bool) -> LayerField:
    return LayerField(name, type_, stored="profile", nullable=nullable, brief=False)


LAYER_FIELDS: tuple[LayerField, ...] = (
    LayerField("id", "int", "store", "key", nullable=False, sortable=True),
    LayerField(
        "job_id", "text", "store", "key", nullable=False, filter="one_of", description="job id"
    ),
    LayerField(
        "checkpoint_id", "text", "job", filter="equals", length=128, description="checkpoint id"
    ),
    LayerField(
        "architecture",
        "text",
        "job",
        filter="equals",
        column="arch",
        query="arch",
        length=64,
        description="architecture",
    ),
    LayerField(
        "name", "text", nullable=False, sortable=True, column="layer_name", length=512, index=False
    ),
    LayerField(
        "kind",
        "text",
        nullable=False,
        sortable=True,
        filter="one_of",
        length=16,
        description="layer kind",
    ),
    _csv_only("parameter", "text", nullable=False),
    _csv_only("shape", "shape", nullable=False),
    LayerField("k", "int", nullable=False),
    LayerField("alpha", "float", sortable=True, filter="range", description="α, h ∝ σ^α"),
    LayerField(
        "r2_alpha",
        "float",
        sortable=True,
        filter="range",
        query="r2",
        description="R² of the alpha fit",
    ),
    _csv_only("alpha_se", "float", nullable=True),
    LayerField("gamma", "float", sortable=True, filter="range", description="γ, σ_k ∝ k^−γ"),
    LayerField("r2_gamma", "float", sortable=True),
    LayerField("s", "float", sortable=True, filter="range", description="s, rank-sorted h ∝ j^−s"),
    _csv_only("r2_s", "float", nullable=True),
    LayerField("s_eig", "float", sortable=True),
    LayerField("predicted_s", "float", sortable=True),
    LayerField("triangle_relative_error", "float", sortable=True),
    LayerField("pr_h", "float", sortable=True),
    _csv_only("n_valid", "int", nullable=False),
    _csv_only("n_neg", "int", nullable=False),
    LayerField("route", "text", sortable=True, filter="one_of", length=32, description="h route"),
    LayerField(
        "route_reason", "text", filter="equals", description="why the GGN route was not taken"
    ),
    LayerField("node_id", "text", "task", filter="equals", length=64, description="Ray node id"),
    LayerField("wall_seconds", "float", sortable=True),
    LayerField(
        "flags", "flags", nullable=False, filter="has", query="flag", description="an engine flag"
    ),
    LayerField("step", "int", "job", sortable=True, filter="range", description="training step"),
)

FIELDS: dict[str, LayerField] = {f.name: f for f in LAYER_FIELDS}
COLUMN_FIELDS: tuple[LayerField, ...] = tuple(f for f in LAYER_FIELDS if f.stored != "profile")
SORTABLE_FIELDS: tuple[LayerField, ...] = tuple(f for f in LAYER_FIELDS if f.sortable)
BRIEF_FIELDS: tuple[LayerField, ...] = tuple(f for f in COLUMN_FIELDS if f.brief)
CSV_FIELDS: tuple[LayerField, ...] = tuple(f for f in LAYER_FIELDS if f.csv)


def filter_params() -> dict[str, FilterParam]:
    """Every filter query parameter of the layer listings, by name."""
    params: list[FilterParam] = []
    for f in LAYER_FIELDS:
        stem = f.query or f.name
        if f.filter == "equals":
            params.append(FilterParam(stem, f, "eq"))
        elif f.filter == "one_of":
            params.append(FilterParam(stem, f, "in"))
        elif f.filter == "has":
            params.append(FilterParam(stem, f, "has"))
        elif f.filter == "range":
            if f.type == "int":
                params.append(FilterParam(stem, f, "eq"))
            params.append(FilterParam(f"{stem}_min", f, "ge"))
            params.append(FilterParam(f"{stem}_max", f, "le"))
    return {p.name: p for p in params}


FILTER_PARAMS: dict[str, FilterParam] = filter_params()
