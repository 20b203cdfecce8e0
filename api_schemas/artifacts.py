"""Wire models of uploaded artifacts: checkpoints and datasets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api_schemas.wire import UtcDatetime

CheckpointFormat = Literal["safetensors", "pt2", "zoo", "hf"]
DatasetFormat = Literal["npz", "safetensors", "builtin"]


class Checkpoint(BaseModel):
    id: str = Field(..., description="sha256 of the uploaded bytes, or `zoo:<arch>`")
    sha256: str | None = None
    format: CheckpointFormat
    architecture: str | None = None
    config: dict[str, Any] | None = None
    filename: str | None = None
    size: int = 0
    created_at: UtcDatetime | None = None


class Dataset(BaseModel):
    id: str = Field(..., description="sha256 of the uploaded bytes, or a built-in name")
    sha256: str | None = None
    format: DatasetFormat
    filename: str | None = None
    size: int = 0
    n_examples: int | None = None
    created_at: UtcDatetime | None = None
