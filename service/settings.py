"""Service configuration: environment variables prefixed ``CURVPROF_`` (or constructor args)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits


class Settings(BaseSettings):
    """Embedded defaults: SQLite under ``data_dir``, a local loopback-only Ray. Each field's
    docstring is its description."""

    model_config = SettingsConfigDict(
        env_prefix="CURVPROF_", extra="ignore", use_attribute_docstrings=True
    )

    data_dir: Path = Path("./curvprof-data")
    db_url: str | None = None
    """default: a SQLite file under data_dir"""
    ray_address: str | None = None
    """None: an embedded local Ray"""
    ray_num_cpus: int | None = None
    """CPUs of the embedded Ray"""
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    open_reads: bool = True
    max_upload_bytes: PositiveInt = 2 * 1024**3
    allow_pickle_checkpoints: bool = False
    # Bounds on uploads and configs, checked before anything is decompressed or built.
    max_decompressed_bytes: PositiveInt = DEFAULT_LIMITS.max_decompressed_bytes
    max_elements: PositiveInt = DEFAULT_LIMITS.max_elements
    max_archive_members: PositiveInt = DEFAULT_LIMITS.max_archive_members
    max_header_bytes: PositiveInt = DEFAULT_LIMITS.max_header_bytes
    max_model_parameters: PositiveInt = DEFAULT_LIMITS.max_model_parameters
    max_form_fields: NonNegativeInt = 8
    """non-file multipart fields"""
    max_form_field_bytes: PositiveInt = 1024 * 1024
    """per field"""
    pickle_probe_timeout_s: PositiveFloat = 120.0
    """limit of the subprocess that opens a .pt2 upload"""
    num_gpus_per_task: NonNegativeFloat | None = None
    """GPUs per layer task; None: 1 when the cluster has GPUs"""
    layers_per_task: PositiveInt = 1
    max_concurrent_jobs: PositiveInt = 2
    task_max_retries: NonNegativeInt = 3
    run_jobs: bool = True
    """start the in-process job runner"""
    workers: PositiveInt = 1
    """processes of `curvprof serve` on its port; the one holding data_dir/leader.lock runs
    the jobs (service/leader.py)"""
    api_threads: PositiveInt = 8
    """requests served at once, each on a worker thread with one connection of the pool; more
    wait in a queue (service/admission.py). A process runs Python on one core at a time, so
    more threads than this mostly contend for it: 40 cost 45% more CPU per request than 8
    under load (docs/reliability.md)"""
    upload_slots: PositiveInt = 4
    """uploads receiving their body at once, apart from the api_threads slots; more wait in
    their own queue (service/admission.py)"""
    upload_min_bytes_per_s: PositiveInt = 16 * 1024
    """an upload body that arrives slower than this on average (after upload_rate_grace_s)
    is cut with a 408 and its partial file removed"""
    upload_rate_grace_s: PositiveFloat = 10.0
    """seconds an upload may take before its rate is judged"""
    queue_timeout_s: PositiveFloat = 30.0
    """seconds a request waits in the queue, then 503"""
    keep_alive_s: PositiveInt = 75
    """seconds an idle HTTP connection stays open; longer than the idle timeout of clients and
    load balancers, so none sends on a connection the server is closing"""
    layer_cache_bytes: NonNegativeInt = 64 * 1024**2
    """bytes of layer rows' JSON kept per server process for the pages of GET /v1/layers
    (service/store/json_cache.py); 0: none"""
    job_cache_bytes: NonNegativeInt = 8 * 1024**2
    """bytes of jobs' JSON (and the rows they were built from) kept per server process for
    the pages of GET /v1/jobs (service/store/job_pages.py); 0: none"""
    db_pool_timeout: PositiveFloat = 5.0
    """seconds a request waits for a connection, then 503"""

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @model_validator(mode="after")
    def _default_db(self) -> Settings:
        if not self.db_url:
            self.db_url = f"sqlite:///{(self.data_dir / 'curvprof.db').resolve()}"
        return self

    @property
    def database_url(self) -> str:
        assert self.db_url is not None
        return self.db_url

    @property
    def intake_limits(self) -> IntakeLimits:
        """The ``max_*`` fields that ``IntakeLimits`` declares, as one value for the loaders."""
        return IntakeLimits(**{f.name: getattr(self, f.name) for f in fields(IntakeLimits)})

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
