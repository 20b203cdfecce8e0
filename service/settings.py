"""Service configuration: environment variables prefixed ``CURVPROF_`` (or constructor args)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits


class Settings(BaseSettings):
    """Embedded defaults: SQLite under ``data_dir``, a local loopback-only Ray."""

    model_config = SettingsConfigDict(env_prefix="CURVPROF_", extra="ignore")

    data_dir: Path = Path("./curvprof-data")
    db_url: str | None = Field(default=None, description="default: sqlite file under data_dir")
    ray_address: str | None = Field(default=None, description="None: embedded local Ray")
    ray_num_cpus: int | None = Field(default=None, description="CPUs of the embedded Ray")
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    open_reads: bool = True
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    allow_pickle_checkpoints: bool = False
    # Bounds on uploads and configs, checked before anything is decompressed or built.
    max_decompressed_bytes: int = Field(default=DEFAULT_LIMITS.max_decompressed_bytes, ge=1)
    max_elements: int = Field(default=DEFAULT_LIMITS.max_elements, ge=1)
    max_archive_members: int = Field(default=DEFAULT_LIMITS.max_archive_members, ge=1)
    max_header_bytes: int = Field(default=DEFAULT_LIMITS.max_header_bytes, ge=1)
    max_model_parameters: int = Field(default=DEFAULT_LIMITS.max_model_parameters, ge=1)
    max_form_fields: int = Field(default=8, ge=0, description="non-file multipart fields")
    max_form_field_bytes: int = Field(default=1024 * 1024, ge=1, description="per field")
    pickle_probe_timeout_s: float = Field(
        default=120.0, gt=0, description="limit of the subprocess that opens a .pt2 upload"
    )
    num_gpus_per_task: float | None = Field(
        default=None, ge=0.0, description="GPUs per layer task; None: 1 when the cluster has GPUs"
    )
    layers_per_task: int = Field(default=1, ge=1)
    max_concurrent_jobs: int = Field(default=2, ge=1)
    task_max_retries: int = Field(default=3, ge=0)
    run_jobs: bool = Field(default=True, description="start the in-process job runner")
    workers: int = Field(
        default=1,
        ge=1,
        description="processes of `curvprof serve` on its port; the one holding "
        "data_dir/leader.lock runs the jobs (service/leader.py)",
    )
    api_threads: int = Field(
        default=40,
        ge=1,
        description="requests served at once, each on a worker thread with one connection of "
        "the pool; more wait in a queue (service/admission.py)",
    )
    upload_slots: int = Field(
        default=4,
        ge=1,
        description="uploads receiving their body at once, apart from the api_threads slots; "
        "more wait in their own queue (service/admission.py)",
    )
    upload_min_bytes_per_s: int = Field(
        default=16 * 1024,
        ge=1,
        description="an upload body that arrives slower than this on average (after "
        "upload_rate_grace_s) is cut with a 408 and its partial file removed",
    )
    upload_rate_grace_s: float = Field(
        default=10.0, gt=0, description="seconds an upload may take before its rate is judged"
    )
    queue_timeout_s: float = Field(
        default=30.0, gt=0, description="seconds a request waits in the queue, then 503"
    )
    keep_alive_s: int = Field(
        default=75,
        ge=1,
        description="seconds an idle HTTP connection stays open; longer than the idle timeout "
        "of clients and load balancers, so none sends on a connection the server is closing",
    )
    layer_cache_bytes: int = Field(
        default=64 * 1024**2,
        ge=0,
        description="bytes of full layer rows' JSON kept per server process for full pages "
        "of GET /v1/layers (service/store/layer_cache.py); 0: none",
    )
    db_pool_timeout: float = Field(
        default=5.0, gt=0, description="seconds a request waits for a connection, then 503"
    )

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
        return IntakeLimits(
            max_decompressed_bytes=self.max_decompressed_bytes,
            max_elements=self.max_elements,
            max_archive_members=self.max_archive_members,
            max_header_bytes=self.max_header_bytes,
            max_model_parameters=self.max_model_parameters,
        )

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
