"""The shared wire types: timestamps always in UTC, text without NUL, bounded steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ValidationError

from api_schemas.wire import INT64_MAX, Step, Text, UtcDatetime, as_utc, without_nul


class _Row(BaseModel):
    at: UtcDatetime
    text: Text
    step: Step


def test_naive_times_are_utc_and_aware_ones_are_converted() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert as_utc(naive) == naive.replace(tzinfo=UTC) and as_utc(naive).tzinfo is UTC
    plus_two = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(plus_two) == naive.replace(tzinfo=UTC) and as_utc(plus_two).tzinfo is UTC
    row = _Row(at=plus_two, text="ok", step=INT64_MAX)
    assert row.at.utcoffset() == timedelta(0)


def test_nul_and_out_of_range_steps_are_refused() -> None:
    assert without_nul("a b") == "a b"
    with pytest.raises(ValueError, match="NUL"):
        without_nul("a\x00b")
    for bad in ({"text": "a\x00"}, {"step": -1}, {"step": INT64_MAX + 1}):
        with pytest.raises(ValidationError):
            _Row.model_validate({"at": datetime(2026, 1, 1), "text": "t", "step": 0, **bad})
