"""Field types and the error document shared by every wire model.

- ``UtcDatetime``: a timestamp that always carries its zone; naive values (the store keeps
  naive UTC) are read as UTC, aware ones are converted to UTC.
- ``Text``: a string without NUL characters (PostgreSQL cannot store them; both stores
  refuse them alike, at validation, with a 422).
- ``Problem``: an RFC 9457 problem details document, the body of every error response.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC, a naive value being taken as UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


INT64_MAX = 2**63 - 1
"""The largest integer both stores keep (SQLite INTEGER, PostgreSQL BIGINT)."""


def split_csv(value: str | None) -> list[str] | None:
    """A comma-separated query value as its non-blank items; None when there are none."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
Text = Annotated[str, AfterValidator(without_nul)]
Step = Annotated[int, Field(ge=0, le=INT64_MAX, description="a training step")]


class ProblemItem(BaseModel):
    """One failed check of a request: where (``loc``), what (``msg``) and its ``type``."""

    loc: list[str | int] = Field(default_factory=list)
    msg: str
    type: str = "value_error"


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``).

    ``type`` is ``about:blank`` (the status says it all) and ``title`` is the status phrase;
    ``detail`` explains this occurrence, ``instance`` is the request path. Validation errors
    add ``errors``, one item per failed check.
    """

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ProblemItem] | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
