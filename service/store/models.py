"""ORM models (SQLAlchemy 2, typed). The schema itself is owned by the Alembic migrations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    InstrumentedAttribute,
    Mapped,
    MappedColumn,
    mapped_column,
    relationship,
)

from api_schemas.layer_fields import COLUMN_FIELDS, FIELDS, SORTABLE_FIELDS, LayerField
from service.store import provenance

BigId = BigInteger().with_variant(Integer(), "sqlite")

IDEMPOTENCY_KEY_LENGTH = 255
"""The longest stored Idempotency-Key (a batch's jobs store a longer one than the header)."""


def utcnow() -> datetime:
    """Naive UTC (the same on SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class StoredArtifact:
    """The columns of an uploaded artifact: its content id and hash, format, file name, size,
    stored path and time (``migrations/columns.artifact_columns``)."""

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class CheckpointRow(StoredArtifact, Base):
    __tablename__ = "checkpoints"

    arch: Mapped[str | None] = mapped_column(String(64), index=True)
    config_json: Mapped[str | None] = mapped_column(Text)


class DatasetRow(StoredArtifact, Base):
    __tablename__ = "datasets"

    n_examples: Mapped[int | None] = mapped_column(Integer)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec_json: Mapped[str] = mapped_column(Text)
    checkpoint_id: Mapped[str] = mapped_column(String(128), index=True)
    dataset_ref: Mapped[str] = mapped_column(String(128))
    arch: Mapped[str | None] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(36), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), unique=True)
    error: Mapped[str | None] = mapped_column(Text)
    provenance_json: Mapped[str | None] = mapped_column(Text)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # the labels of spec_json, as columns to filter on (migration 0003_job_labels)
    name: Mapped[str | None] = mapped_column(String(200), index=True)
    step: Mapped[int | None] = mapped_column(Integer, index=True)
    # a listing's figures, fixed when the job ends (job_summary.py; migration 0005)
    summary_done: Mapped[int | None] = mapped_column(Integer)
    summary_total: Mapped[int | None] = mapped_column(Integer)
    summary_failed: Mapped[int | None] = mapped_column(Integer)
    summary_compute_seconds: Mapped[float | None] = mapped_column(Float)


class JobTagRow(Base):
    """One tag of one job (the spec's ``tags``), indexed for ``tag=`` filters."""

    __tablename__ = "job_tags"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class JobLogRow(Base):
    """One log line of one job, as the runner wrote it (``curvprof logs JOB``)."""

    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)


class JobLayerRow(Base):
    """Progress of one layer of one job (the result itself lives in layer_results)."""

    __tablename__ = "job_layers"
    __table_args__ = (UniqueConstraint("job_id", "layer_name", name="uq_job_layers_job_layer"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    layer_name: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class LayerResultRow(Base):
    """One profiled layer: the registry's columns (``api_schemas.layer_fields``), the
    Provenance of its numbers (``store.provenance``), the settings they depend on, and its
    stored profile (``layer_profiles``).

    The registry's and the provenance's columns are added below the class, made from their
    declarations; read them through :func:`layer_column` and ``store.provenance``."""

    __tablename__ = "layer_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    dtype: Mapped[str] = mapped_column(String(16))
    top_k: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    stored_profile: Mapped[LayerProfileRow] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )

    @property
    def profile_blob(self) -> bytes:
        return self.stored_profile.blob


_SQL_TYPES: dict[str, Any] = {"int": Integer, "float": Float, "flags": Text}


def _registry_column(field: LayerField) -> MappedColumn[Any]:
    if field.type == "text":
        sql_type: Any = String(field.length) if field.length else Text
    else:
        sql_type = _SQL_TYPES[field.type]
    default = "[]" if field.type == "flags" else 0 if not field.nullable else None
    return mapped_column(
        field.column_name, sql_type, nullable=field.nullable, index=field.indexed, default=default
    )


for _field in COLUMN_FIELDS:
    if _field.stored == "column":
        setattr(LayerResultRow, _field.column_name, _registry_column(_field))
for _name in provenance.COLUMNS:
    setattr(LayerResultRow, _name, provenance.column(_name))
Base.metadata.tables["layer_results"].append_constraint(
    UniqueConstraint("job_id", "layer_name", name="uq_layer_results_job_layer")
)


def layer_column(name: str) -> InstrumentedAttribute[Any]:
    """The column of the registry field ``name`` (``api_schemas.layer_fields.FIELDS``)."""
    column: InstrumentedAttribute[Any] = getattr(LayerResultRow, FIELDS[name].column_name)
    return column


for _name in ("alpha", "gamma", "s"):
    Index(f"ix_layer_results_kind_{_name}", layer_column("kind"), layer_column(_name))

# PostgreSQL walks an ascending index backwards as DESC NULLS FIRST, not as the listings'
# descending orders (nulls last, then the tie-breaker): without these a descending layer sort
# and every newest-first listing sort all their matching rows. SQLite keeps nulls lowest, so
# a backward walk of the column's own index is that order already.
DESCENDING_SORT_COLUMNS = tuple(
    f.column_name for f in SORTABLE_FIELDS if f.indexed and f.stored == "column"
)
POSTGRESQL_ONLY_INDEXES: list[Index] = [
    *(
        Index(
            f"ix_layer_results_{column}_desc",
            getattr(LayerResultRow, column).desc().nulls_last(),
            LayerResultRow.id,
        )
        for column in DESCENDING_SORT_COLUMNS
    ),
    *(  # paging.newest_first
        Index(
            f"ix_{table.__tablename__}_newest_first",
            table.created_at.desc().nulls_last(),
            table.id.desc(),
        )
        for table in (CheckpointRow, DatasetRow, JobRow)
    ),
]
for _index in POSTGRESQL_ONLY_INDEXES:
    _index.ddl_if(dialect="postgresql")


def on_this_dialect(dialect: str) -> Callable[..., bool]:
    """An ``include_object`` for Alembic's comparison, which does not read ``ddl_if``: the
    schema objects that exist on ``dialect``."""

    def include(obj: Any, _name: Any, _type: Any, _reflected: Any, _compare_to: Any) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    return include


class LayerProfileRow(Base):
    """The compressed LayerProfile of one layer result, kept apart from the indexed columns
    so that filtering and sorting ``layer_results`` never reads the arrays."""

    __tablename__ = "layer_profiles"

    layer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("layer_results.id", ondelete="CASCADE"), primary_key=True
    )
    blob: Mapped[bytes] = mapped_column(LargeBinary)
